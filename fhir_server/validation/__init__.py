"""FHIR R4 (4.0.1) validation, generated from the official StructureDefinitions.

`validate_resource` is what every write runs (store.repository): structure, cardinality,
types, primitive formats, primitive extensions, required bindings, the error invariants and
the profiles the resource claims (`meta.profile`); every problem becomes one issue of the
400 OperationOutcome, each with its FHIRPath `expression`. `validate` returns the issues
instead (for `$validate`, which also wants warnings: extensible/preferred bindings, warning
invariants, what could not be checked).

The tables come from `scripts/gen_validation_definitions.py` (data/, with a note of their
source); `checker.py` compiles them into per-type closures, once per process.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

from fhir_server.errors import FhirError, bad_request
from fhir_server.limits import check_document
from fhir_server.search.registry import resource_types
from fhir_server.validation.checker import Compiled, Definitions, Issue, Primitives, Run
from fhir_server.validation.profiles import Cached, Conformance, profiles
from fhir_server.validation.profiles import configure as configure_profiles
from fhir_server.validation.valuesets import codes_of

__all__ = ["Conformance", "Issue", "configure", "outcome", "validate", "validate_resource"]


_level = {"validation": "full"}


def configure(level: str = "full", unknown_profile: str = "warn") -> None:
    """`level` full (R4 validation on every write) or basic (resourceType, id and the request
    limits only); `unknown_profile`: see profiles.configure."""
    if level not in ("full", "basic"):
        raise ValueError("validation level must be full or basic")
    _level["validation"] = level
    configure_profiles(unknown_profile)


def _load(name: str) -> Any:
    text = importlib_resources.files("fhir_server.validation").joinpath("data", name)
    return json.loads(text.read_text(encoding="utf-8"))


@cache
def definitions() -> Definitions:
    data = _load("definitions.json")
    types: dict[str, dict[str, Any]] = data["types"]
    choices = frozenset(
        name
        for t in types.values()
        for node in t["nodes"].values()
        for name, spec in node.items()
        if spec.get("choice")
    )
    return Definitions(types, Primitives(data["primitives"]), codes_of, choices)


@cache
def top_level_keys(res_type: str, flag: str) -> frozenset[str]:
    """The JSON keys of a resource type's top-level elements whose definition has `flag`
    (`summary`: isSummary; `min`: mandatory), choice elements expanded (`valueQuantity`, ...)
    and primitives with their `_name` twin. Empty for an unknown type."""
    definition = definitions().types.get(res_type)
    if definition is None:
        return frozenset()
    prims = definitions().primitives.checks
    keys: set[str] = set()
    for name, spec in definition["nodes"][res_type].items():
        if not spec.get(flag):
            continue
        for t in spec.get("types") or []:
            key = name + t[0].upper() + t[1:] if spec.get("choice") else name
            if spec.get("choice") and t in ("SimpleQuantity", "MoneyQuantity"):
                key = name + "Quantity"
            keys.add(key)
            if t in prims:
                keys.add("_" + key)
    return frozenset(keys)


@cache
def base() -> Compiled:
    """The R4 base checkers (compiled lazily per type, cached for the process)."""
    return Compiled(definitions())


def validate(
    resource: Any,
    expected_type: str | None = None,
    *,
    warnings: bool = False,
    conformance: Conformance | None = None,
    extra_profiles: tuple[str, ...] = (),
) -> list[Issue]:
    """Every problem of `resource` as an R4 resource (and against the profiles it claims and
    `extra_profiles`), in document order; errors only unless `warnings`."""
    run = Run(warnings=warnings, conformance=Cached(conformance) if conformance else None)
    if not isinstance(resource, dict):
        run.error("structure", "", "The body must be a JSON object holding a FHIR resource")
        return run.issues
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        run.error("required", "resourceType", "The resource has no resourceType")
        return run.issues
    if res_type not in resource_types() or res_type not in definitions().types:
        run.error("structure", "resourceType", f"Unknown resource type '{res_type}'")
        return run.issues
    if expected_type is not None and res_type != expected_type:
        text = f"resourceType '{res_type}' does not match the URL type '{expected_type}'"
        run.error("structure", "resourceType", text)
        return run.issues
    run.resource = run.root = resource
    if res_type == "Bundle":
        run.bundle = resource  # references in its entries resolve to its other entries
    base().type_check(res_type)(resource, res_type, run)
    claimed = _claimed(resource)
    for url in dict.fromkeys((*claimed, *extra_profiles)):
        profiles().check(url, resource, run, conformance, claimed=url in claimed)
    return _unique(run.issues)


def _claimed(resource: dict[str, Any]) -> tuple[str, ...]:
    meta = resource.get("meta")
    listed = meta.get("profile") if isinstance(meta, dict) else None
    if type(listed) is not list:
        return ()
    return tuple(p for p in listed if isinstance(p, str))


def _unique(issues: list[Issue]) -> list[Issue]:
    if len(issues) < 2:
        return issues
    return list(dict.fromkeys(issues))


def validate_resource(
    resource: Any,
    expected_type: str | None = None,
    conformance: Conformance | None = None,
    checked: bool = False,
) -> dict[str, Any]:
    """Check a parsed JSON body is a valid R4 resource; return it unchanged, or raise a 400
    whose OperationOutcome lists every error.

    The stored body is the client's JSON (plus server meta), never a re-serialization.
    `checked`: the resource is (part of) a document that already passed `check_document`
    (a request body), which is not repeated.
    """
    if isinstance(resource, dict) and not checked:
        check_document(resource, f"The {resource.get('resourceType') or 'resource'}")
    if _level["validation"] == "basic":
        return _basic(resource, expected_type)
    issues = [i for i in validate(resource, expected_type, conformance=conformance)
              if i.severity == "error"]  # fmt: skip
    if issues:
        raise invalid(resource, issues)
    return resource  # type: ignore[no-any-return]


def _basic(resource: Any, expected_type: str | None) -> dict[str, Any]:
    """What `validation=basic` keeps: a JSON object of a known type with a valid id."""
    if not isinstance(resource, dict):
        raise bad_request("The body must be a JSON object holding a FHIR resource")
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or res_type not in resource_types():
        raise bad_request(f"Unknown resource type '{res_type}'", ["resourceType"])
    if expected_type is not None and res_type != expected_type:
        raise bad_request(f"resourceType '{res_type}' does not match the URL type "
                          f"'{expected_type}'", ["resourceType"])  # fmt: skip
    rid = resource.get("id")
    if rid is not None and definitions().primitives.forms["id"].fullmatch(str(rid)) is None:
        raise bad_request("Resource id must be 1-64 characters of A-Z a-z 0-9 - .", ["id"])
    return resource


def invalid(resource: Any, issues: list[Issue]) -> FhirError:
    res_type = resource.get("resourceType") if isinstance(resource, dict) else None
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    exc = bad_request(
        f"Invalid {res_type or 'resource'}: {first.text}{more}",
        [first.expression] if first.expression else None,
    )
    exc.code = first.code if len(issues) == 1 else "invalid"
    exc.issues = [i.json() for i in issues]
    return exc


def outcome(issues: list[Issue]) -> dict[str, Any]:
    """The OperationOutcome `$validate` answers (an `information` issue when all is well)."""
    if not issues:
        issues = [Issue("information", "informational", "", "No issues found")]
    items = []
    for i in issues:
        item = i.json()
        if not i.expression:
            item.pop("expression")
        items.append(item)
    return {"resourceType": "OperationOutcome", "issue": items}
