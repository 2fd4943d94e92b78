"""`$validate` (type and instance level): the R4 validator's verdict on a resource, as an
OperationOutcome with errors, warnings (extensible and preferred bindings, warning invariants,
unknown profiles) and information, without storing anything.

Registered like every operation (`register`, at composition), so the router's guard asks the
access policy first: reading the type (type level) or the resource (instance level).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson

from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json, _read_current
from fhir_server.api.operations import Operation, Operations
from fhir_server.errors import bad_request
from fhir_server.search.registry import resource_types
from fhir_server.store.conformance import StoredConformance
from fhir_server.validation import Issue, outcome, validate

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = ("create", "update", "delete")


def _parameters(ctx: Context, req: FhirRequest) -> tuple[Any, str | None, list[str]]:
    """(resource or None, mode, profiles) from the query and a Parameters or raw body."""
    mode = None
    profiles: list[str] = []
    for name, value in req.query:
        if name == "mode":
            mode = value
        elif name == "profile":
            profiles.append(value)
    resource = None
    if req.method.upper() == "POST" and (req.parsed is not None or req.body.strip()):
        body = _parse_json(req)
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            for p in body.get("parameter", []) or []:
                if not isinstance(p, dict):
                    continue
                if p.get("name") == "resource":
                    resource = p.get("resource")
                elif p.get("name") == "mode":
                    mode = p.get("valueCode") or p.get("valueString") or mode
                elif p.get("name") == "profile":
                    url = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString")
                    if url:
                        profiles.append(url)
        else:
            resource = body
    if mode is not None and mode not in MODES:
        raise bad_request(f"mode must be one of {', '.join(MODES)}, not '{mode}'", ["mode"])
    return resource, mode, profiles


def _answer(issues: list[Issue]) -> FhirResponse:
    return FhirResponse(200, orjson.dumps(outcome(issues)))


def _run(ctx: Context, res_type: str, resource: Any, profiles: list[str]) -> list[Issue]:
    with ctx.read_connection() as conn:
        conformance = StoredConformance(conn, ctx.store.sql, ctx.store.base_url)
        conformance.policy = ctx.access  # a reference it may not read does not resolve
        return validate(resource, res_type, warnings=True, conformance=conformance,
                        extra_profiles=tuple(profiles))  # fmt: skip


def validate_type(res_type: str, ctx: Context, req: FhirRequest) -> FhirResponse:
    resource, mode, profiles = _parameters(ctx, req)
    if mode == "delete":
        raise bad_request("mode=delete needs an instance: POST /{type}/{id}/$validate")
    if resource is None:
        raise bad_request("$validate needs a resource: the body, or a Parameters 'resource'")
    issues = _run(ctx, res_type, resource, profiles)
    if mode == "update" and isinstance(resource, dict) and not resource.get("id"):
        issues.append(Issue("error", "required", f"{res_type}.id", "an update needs an id"))
    return _answer(issues)


def validate_instance(res_type: str, ctx: Context, req: FhirRequest, res_id: str) -> FhirResponse:
    resource, mode, profiles = _parameters(ctx, req)
    stored = _read_current(ctx, res_type, res_id)
    if mode == "delete":
        # no referential integrity is enforced here: a delete is always allowed
        return _answer([Issue("information", "informational", "",
                              f"{res_type}/{res_id} may be deleted")])  # fmt: skip
    if resource is None:
        resource = stored.json()
    issues = _run(ctx, res_type, resource, profiles)
    if isinstance(resource, dict) and resource.get("id") not in (None, res_id):
        text = f"the id '{resource.get('id')}' is not the URL's '{res_id}'"
        issues.append(Issue("error", "invalid", f"{res_type}.id", text))
    return _answer(issues)


def register(operations: Operations) -> None:
    """`$validate` on every resource type, GET and POST, type and instance level."""
    both = frozenset({"GET", "POST"})
    for res_type in sorted(resource_types()):
        at_type = partial(validate_type, res_type)
        at_instance = partial(validate_instance, res_type)
        post = frozenset({"POST"})
        operations.register(Operation(res_type, "$validate", at_type, post, "r", DEFINITION,
                                      level="type"))  # fmt: skip
        operations.register(Operation(res_type, "$validate", at_instance, both, "r", DEFINITION))
