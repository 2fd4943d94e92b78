"""The FHIR R4 search-parameter registry, read from tables generated from the official definitions.

The tables in `data/` come from scripts/gen_search_definitions.py (FHIR R4 4.0.1, CC0). They are
loaded lazily, once, so importing the package costs nothing until search is first used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

ParamType = Literal[
    "token", "string", "date", "reference", "quantity", "uri", "number", "composite", "special"
]

# Parameters every resource type has; the others under "Resource" in the table (_text,
# _content, _query, ...) are not offered because nothing indexes them.
COMMON_PARAMS: tuple[str, ...] = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    resource_type: str
    expression: str
    targets: tuple[str, ...]
    # composite only: (code, type, expression relative to each element `expression` selects)
    components: tuple[tuple[str, str, str], ...] = ()


def _load(name: str) -> Any:
    """Read one generated JSON table shipped inside the package."""
    text = resources.files("fhir_server.search").joinpath("data", name).read_text("utf-8")
    return json.loads(text)


@cache
def _definitions() -> dict[str, Any]:
    return dict(_load("search_parameters.json"))


@cache
def official_definitions() -> Mapping[str, Mapping[str, Any]]:
    """The official R4 SearchParameter resources of the parameters offered, by canonical URL,
    as HL7 publishes them (what the CapabilityStatement's `searchParam.definition` names)."""
    data = resources.files("fhir_server.search").joinpath(
        "data", "search_parameter_definitions.ndjson"
    )
    lines = data.read_bytes().splitlines()[1:]  # line 1: where the rest came from
    found = [json.loads(line) for line in lines if line.strip()]
    return MappingProxyType({d["url"]: d for d in found})


@cache
def _definition_urls() -> dict[tuple[str, str], str]:
    index: dict[tuple[str, str], str] = {}
    for url, d in official_definitions().items():
        for base in d.get("base", ()):
            index["Resource" if base in ("Resource", "DomainResource") else base, d["code"]] = url
    return index


def definition_url(resource_type: str, code: str) -> str | None:
    """The canonical URL of the official SearchParameter behind `code` on `resource_type`
    (`clinical-code` for Observation's `code`, `Resource-profile` for `_profile`)."""
    urls = _definition_urls()
    return urls.get((resource_type, code)) or urls.get(("Resource", code))


@cache
def resource_types() -> frozenset[str]:
    """All concrete FHIR R4 resource type names."""
    return frozenset(_load("resource_types.json"))


@cache
def _compartment() -> dict[str, tuple[str, ...]]:
    data = _load("patient_compartment.json")
    return {k: tuple(v) for k, v in data.items() if not k.startswith("_")}


@cache
def params_for(resource_type: str) -> Mapping[str, SearchParam]:
    """The search parameters of `resource_type`: its own plus the common ones (read-only)."""
    defs = _definitions()
    out: dict[str, SearchParam] = {}
    common = defs.get("Resource", {})
    for code in COMMON_PARAMS:
        item = common.get(code)
        if item is not None:
            out[code] = _param(code, item, resource_type)
    if resource_type in resource_types():
        for code, item in defs.get(resource_type, {}).items():
            out[code] = _param(code, item, resource_type)
    return MappingProxyType(out)


def _param(code: str, item: Mapping[str, Any], resource_type: str) -> SearchParam:
    return SearchParam(
        code=code,
        type=item["type"],
        resource_type=resource_type,
        expression=item.get("expression", ""),
        targets=tuple(item.get("target", ())),
        components=tuple((c, t, e) for c, t, e in item.get("components", ())),
    )


def patient_compartment(resource_type: str) -> tuple[str, ...]:
    """Codes of the parameters that put `resource_type` in a Patient's compartment; () if none."""
    return _compartment().get(resource_type, ())
