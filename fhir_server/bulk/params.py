"""The `$export` kick-off request: query string or Parameters body -> a checked `ExportRequest`.

Everything a job needs is decided here, at kick-off, so a bad parameter is a 400 the client
sees at once instead of a failed job later. Unsupported parameters are refused unless the
client sent `Prefer: handling=lenient`; then they are dropped and reported in the manifest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, bad_request
from fhir_server.search.extract import date_range
from fhir_server.search.query import Compiler
from fhir_server.search.registry import patient_compartment, resource_types

NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
KNOWN = frozenset(
    {
        "_outputFormat",
        "_since",
        "_type",
        "_typeFilter",
        "_elements",
        "patient",
        "includeAssociatedData",
    }
)
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


@dataclass(slots=True)
class ExportRequest:
    level: str  # system, patient or group
    group_id: str | None = None
    types: list[str] | None = None  # None: every type the level and the grant allow
    since: int | None = None  # epoch microseconds, inclusive
    type_filters: dict[str, list[str]] = field(default_factory=dict)  # type -> query strings
    elements: list[str] | None = None
    patients: list[str] | None = None  # the `patient` parameter (patient and group level)
    ignored: list[str] = field(default_factory=list)  # dropped under handling=lenient

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(**data)


def in_patient_compartment(res_type: str) -> bool:
    return res_type == "Patient" or bool(patient_compartment(res_type))


def parameters_items(body: Any) -> list[tuple[str, str]]:
    """A POSTed `Parameters` resource as (name, value) pairs like a query string."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("POST $export takes a Parameters resource", ["resourceType"])
    items: list[tuple[str, str]] = []
    for index, param in enumerate(body.get("parameter") or []):
        name = param.get("name") if isinstance(param, dict) else None
        if not isinstance(name, str):
            raise bad_request(f"Parameters.parameter[{index}] needs a name")
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            value = value["reference"].rsplit("/", 1)[-1]  # patient: valueReference
        if not isinstance(value, str | int | bool):
            raise bad_request(f"Parameters.parameter[{index}] ({name}) needs a simple value")
        items.append((name, str(value)))
    return items


def parse_export(
    level: str,
    group_id: str | None,
    items: list[tuple[str, str]],
    base_url: str,
    lenient: bool,
) -> ExportRequest:
    request = ExportRequest(level, group_id)

    def unsupported(text: str) -> None:
        if not lenient:
            raise FhirError(400, text + " (send Prefer: handling=lenient to ignore it)",
                            "not-supported")  # fmt: skip
        request.ignored.append(text)

    for name, value in items:
        if name not in KNOWN:
            unsupported(f"Unknown $export parameter '{name}'")
        elif name == "_outputFormat" and value not in NDJSON_FORMATS:
            raise FhirError(
                400,
                f"_outputFormat '{value}' is not supported; use application/fhir+ndjson",
                "not-supported",
            )
        elif name == "includeAssociatedData":
            unsupported(f"includeAssociatedData={value} is not supported")
    values = _all(items)
    if "_since" in values:
        text = values["_since"][-1]
        try:
            request.since = date_range(text)[0]
        except ValueError:
            raise bad_request(f"_since must be a FHIR instant, not '{text}'", ["_since"]) from None
    if "_type" in values:
        request.types = _types(values["_type"], level, unsupported)
    for text in values.get("_typeFilter", []):
        for query in _FILTER_SPLIT.split(text):
            _type_filter(request, query.strip(), base_url, unsupported)
    if "_elements" in values:
        request.elements = [e.strip() for v in values["_elements"] for e in v.split(",") if e]
    if "patient" in values:
        if level == "system":
            unsupported("The patient parameter applies to Patient and Group exports only")
        else:
            request.patients = [
                p.strip().rsplit("/", 1)[-1] for v in values["patient"] for p in v.split(",") if p
            ]
    return request


def _all(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name, []).append(value)
    return out


def _types(values: list[str], level: str, unsupported: Any) -> list[str]:
    known = resource_types()
    types: list[str] = []
    for value in values:
        for res_type in (t.strip() for t in value.split(",")):
            if not res_type:
                continue
            if res_type not in known:
                raise bad_request(f"_type names an unknown resource type '{res_type}'", ["_type"])
            if level != "system" and not in_patient_compartment(res_type):
                unsupported(f"{res_type} is not in the Patient compartment ({level} export)")
                continue
            if res_type not in types:
                types.append(res_type)
    return types


def _type_filter(request: ExportRequest, query: str, base_url: str, unsupported: Any) -> None:
    res_type, sep, search = query.partition("?")
    if not sep or res_type not in resource_types():
        raise bad_request(
            f"_typeFilter '{query}' must be a search like Observation?status=final",
            ["_typeFilter"],
        )
    if request.types is not None and res_type not in request.types:
        unsupported(f"_typeFilter for {res_type}, which _type does not ask for")
        return
    try:  # compiled here only to refuse what the job could not run
        Compiler(base_url, strict=True).compile(res_type, parse_qsl(search, keep_blank_values=True))
    except FhirError as exc:
        raise bad_request(f"_typeFilter '{query}': {exc.diagnostics}", ["_typeFilter"]) from None
    request.type_filters.setdefault(res_type, []).append(search)
