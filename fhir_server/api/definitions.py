"""Definitions the CapabilityStatement cites, readable on this server though never stored:
`GET OperationDefinition/{id}`, `GET OperationDefinition?url=...` (also `_id`, `name`,
`code`), and the same for SearchParameter (also `base`, `type`), so every
`operation.definition` and `searchParam.definition` resolves here.

Where they come from (read-only conformance content, served from data):
- the R4 operations the server implements (`$validate`, `$everything`, the terminology
  operations): the official OperationDefinitions, generated from the specification
  (`scripts/gen_operation_definitions.py` -> data/operation_definitions.ndjson);
- the server's own operations (AI review, bulk data): OperationDefinitions in code, next to
  where each is registered (`own(...)`, `Operations.define`), under our canonical base
  `urn:interop:operation:`;
- the search parameters offered: the official SearchParameters (`scripts/gen_search_definitions.py`
  -> fhir_server/search/data/search_parameter_definitions.ndjson).
Only the definitions of operations the CapabilityStatement lists are served (an R4 operation
this server does not implement has no definition here).

Stored definitions (an operator's, PUT like any resource) come first: a read of an id that is
stored answers the stored one (once deleted, the built-in one again); a search answers the
stored matches and adds the built-in ones whose `url` no stored one has (on the first page).
The access policy is the usual one: a read needs `r`, a search `s` on the type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_files
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server import fhirjson
from fhir_server.api.bundling import shape
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _filters
from fhir_server.api.instance import read as stored_read
from fhir_server.api.search import search as stored_search
from fhir_server.errors import FhirError
from fhir_server.search.registry import official_definitions

if TYPE_CHECKING:
    from fhir_server.api.operations import Operations

TYPE = "OperationDefinition"
OWN_BASE = "urn:interop:operation:"
_CONTROL = frozenset({"_count", "_offset", "_summary", "_elements", "_total", "_sort", "_format",
                      "_pretty"})  # fmt: skip


@cache
def specification() -> dict[str, dict[str, Any]]:
    """The official R4 OperationDefinitions of the implemented operations, by canonical URL."""
    data = package_files.files("fhir_server.api") / "data" / "operation_definitions.ndjson"
    lines = data.read_bytes().splitlines()[1:]  # line 1: where the data came from
    found = [fhirjson.loads(line) for line in lines if line.strip()]
    return {d["url"]: d for d in found}


def parameter(
    name: str,
    use: str,
    type_: str | None,
    documentation: str,
    min_: int = 0,
    max_: str = "1",
    part: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One OperationDefinition.parameter (a `part` list instead of a type for tuples)."""
    p: dict[str, Any] = {"name": name, "use": use, "min": min_, "max": max_,
                         "documentation": documentation}  # fmt: skip
    if type_ is not None:
        p["type"] = type_
    if part:
        p["part"] = part
    return p


def own(
    op_id: str,
    code: str,
    title: str,
    description: str,
    resource: list[str],
    *,
    system: bool = False,
    type_level: bool = False,
    instance: bool = False,
    affects_state: bool = False,
    parameters: list[dict[str, Any]] | None = None,
    base: str | None = None,
) -> dict[str, Any]:
    """An OperationDefinition of one of the server's own operations, under `OWN_BASE`."""
    definition: dict[str, Any] = {
        "resourceType": TYPE,
        "id": op_id,
        "url": OWN_BASE + op_id,
        "name": "".join(w[:1].upper() + w[1:] for w in op_id.replace("-", " ").split()),
        "title": title,
        "status": "active",
        "kind": "operation",
        "publisher": "interop",
        "description": description,
        "affectsState": affects_state,
        "code": code,
        "system": system,
        "type": type_level,
        "instance": instance,
        "parameter": parameters or [],
    }
    if resource:
        definition["resource"] = resource
    if base:
        definition["base"] = base
    return definition


def declared(operations: Operations) -> dict[str, dict[str, Any]]:
    """url -> OperationDefinition for every operation the CapabilityStatement lists."""
    spec = specification()
    out: dict[str, dict[str, Any]] = {}
    for op in operations.table:
        if not op.listed or not op.definition or op.definition in out:
            continue
        found = operations.definitions.get(op.definition) or spec.get(op.definition)
        if found is not None:
            out[op.definition] = found
    return out


@dataclass(frozen=True)
class Builtins:
    """A type whose built-in definitions are served: `listed(ctx)` gives them by URL;
    `matched`: the search parameters they answer (others: stored ones only)."""

    type: str
    matched: tuple[str, ...]
    listed: Callable[[Context], Mapping[str, Mapping[str, Any]]]
    selective: tuple[str, ...] = ()  # a search adds built-ins only when it names one of these


OPERATIONS = Builtins(TYPE, ("url", "_id", "name", "code"), lambda ctx: declared(ctx.operations))
# 1,374 of them: a search adds them when it names a url, id, code or base (not a bare listing,
# which would put them all on one page)
SEARCH_PARAMETERS = Builtins(
    "SearchParameter",
    ("url", "_id", "name", "code", "base", "type"),
    lambda ctx: official_definitions(),
    ("url", "_id", "code", "base"),
)


def read(ctx: Context, req: FhirRequest, res_id: str, kind: Builtins = OPERATIONS) -> FhirResponse:
    try:
        return stored_read(ctx, req, kind.type, res_id)
    except FhirError as exc:
        if exc.status not in (404, 410):  # deleted: the built-in one is there again
            raise
        found = next((d for d in kind.listed(ctx).values() if d["id"] == res_id), None)
        if found is None:
            raise
    return FhirResponse(200, _shaped(found, req))


def read_search_parameter(ctx: Context, req: FhirRequest, res_id: str) -> FhirResponse:
    return read(ctx, req, res_id, SEARCH_PARAMETERS)


def search_search_parameters(ctx: Context, req: FhirRequest) -> FhirResponse:
    return search(ctx, req, SEARCH_PARAMETERS)


def _shaped(definition: Mapping[str, Any], req: FhirRequest) -> bytes:
    """A built-in definition with the request's `_summary` / `_elements` applied."""
    query = dict(req.query)
    elements = query.get("_elements")
    summary = query.get("_summary")
    return shape(fhirjson.dumps(definition), summary, elements.split(",") if elements else None)


def search(ctx: Context, req: FhirRequest, kind: Builtins = OPERATIONS) -> FhirResponse:
    response = stored_search(ctx, req, kind.type)
    matched = _builtin_matches(ctx, req, kind)
    if not matched or response.body is None:
        return response
    bundle = fhirjson.loads(response.body)  # decimals of stored entries kept as sent
    stored = _stored_urls(ctx, [d["url"] for d in matched], kind.type)
    added = [
        {
            "fullUrl": f"{ctx.base_url}/{kind.type}/{d['id']}",
            "resource": fhirjson.loads(_shaped(d, req)),
            "search": {"mode": "match"},
        }
        for d in matched
        if d["url"] not in stored
    ]
    if not added:
        return response
    if dict(req.query).get("_summary") != "count":
        bundle["entry"] = [*added, *bundle.get("entry", [])]
    if isinstance(bundle.get("total"), int):
        bundle["total"] += len(added)
    return FhirResponse(200, fhirjson.dumps(bundle), response.headers)


def _builtin_matches(ctx: Context, req: FhirRequest, kind: Builtins) -> list[Mapping[str, Any]]:
    """The declared definitions the query selects, on the first page of a plain search."""
    wanted: dict[str, set[str]] = {}
    for name, value in _filters(req.query):
        if (name == "_offset" and value.strip() != "0") or (name == "_count" and value == "0"):
            return []
        if name in _CONTROL:
            continue
        if name not in kind.matched:
            return []  # a modifier or a parameter the built-ins are not indexed for
        wanted.setdefault(name, set()).update(v for v in value.split(",") if v)
    if kind.selective and not any(n in wanted for n in kind.selective):
        return []
    key = {"_id": "id"}
    return [
        d
        for d in kind.listed(ctx).values()
        if all(_has(d.get(key.get(n, n)), values) for n, values in wanted.items())
    ]


def _has(value: Any, values: set[str]) -> bool:
    """A definition's element (a list: any of its items) is one of the values asked for."""
    items = value if isinstance(value, list) else [value]
    return any(str(v) in values for v in items if v is not None)


def _stored_urls(ctx: Context, urls: list[str], res_type: str) -> set[str]:
    """Which of these canonical URLs a stored definition (one the caller may see) already
    has: one search, whatever page the caller asked for."""
    probe = FhirRequest("GET", [res_type], [
        ("url", ",".join(u.replace(",", r"\,") for u in urls)), ("_elements", "url"),
        ("_count", "1000")])  # fmt: skip
    found = orjson.loads(stored_search(ctx, probe, res_type).body or b"{}")
    return {e.get("resource", {}).get("url") for e in found.get("entry", [])}
