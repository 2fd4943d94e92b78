"""Index extraction: a resource in, the rows of the search index tables out.

Runs on every write (the repository rewrites a resource's rows with its new version), so the
per-type plan (which parameters, which compiled FHIRPath, which row builder) is built once and
cached. Each kind's module (kinds/) says which data types feed it and how they become
comparable values (normalised strings, token system/code, date ranges at the precision written,
reference type/id). A malformed value is skipped, never raised: a stored resource must always be
indexable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_server.search.fhirpath import (
    Compiled,
    UnsupportedExpression,
    compile_path,
    root_keys,
)
from fhir_server.search.kinds import KINDS, composite
from fhir_server.search.kinds.base import Builder, IndexRows
from fhir_server.search.kinds.date import MAX_US, MIN_US, date_range
from fhir_server.search.kinds.quantity import ISO_4217, MAX_QTY, MIN_QTY
from fhir_server.search.kinds.reference import split_reference
from fhir_server.search.kinds.string import normalize_string
from fhir_server.search.kinds.token import CONTACT_POINT_SYSTEMS
from fhir_server.search.registry import params_for, resource_types

__all__ = [
    "CONTACT_POINT_SYSTEMS",
    "ISO_4217",
    "MAX_QTY",
    "MAX_US",
    "MIN_QTY",
    "MIN_US",
    "IndexRows",
    "date_range",
    "extract",
    "index_kinds",
    "normalize_string",
    "rows_from_values",
    "split_reference",
]

# Columns of the resource table, not index rows.
NOT_INDEXED = frozenset({"_id", "_lastUpdated"})
_BUILDERS: dict[str, Builder] = {name: kind.build for name, kind in KINDS.items()}


_ROWS = tuple(kind.rows for kind in KINDS.values())


Step = tuple[str, Builder, Compiled, "frozenset[str] | None"]


@lru_cache(maxsize=512)
def _plan(resource_type: str) -> tuple[Step, ...]:
    """The (code, row builder, compiled expression, top-level keys it reads) indexed for one
    resource type; a step whose keys the resource lacks has no rows (None: always run)."""
    plan: list[Step] = []
    for code, param in params_for(resource_type).items():
        builder = _BUILDERS.get(param.type)
        if builder is None or code in NOT_INDEXED or not param.expression:
            continue
        try:
            if param.type == "composite":  # its elements, components evaluated per element
                selected = composite.selector(param)
                plan.append((code, builder, selected, composite.root_keys(param)))
                continue
            fn = compile_path(param.expression)
            plan.append((code, builder, fn, root_keys(param.expression)))
        except UnsupportedExpression:
            continue
    return tuple(plan)


@lru_cache(maxsize=512)
def index_kinds(resource_type: str) -> frozenset[str]:
    """The `IndexRows` lists (so the index tables) a resource of this type can have rows in,
    from its parameters' kinds: replacing a version clears only those, without parsing and
    extracting the old version to find out."""
    return frozenset(
        KINDS[p.type].rows for p in params_for(resource_type).values() if p.type in KINDS
    )


def extract(resource: dict[str, Any], base_url: str | None = None) -> IndexRows:
    """All search-index rows of `resource` (deduplicated); malformed parts are skipped."""
    rows = IndexRows()
    res_type = resource.get("resourceType") if type(resource) is dict else None
    if type(res_type) is not str or res_type not in resource_types():
        return rows
    for code, builder, fn, keys in _plan(res_type):
        if keys is not None and keys.isdisjoint(resource):
            continue
        try:
            values = fn(resource)
            if values:
                builder(code, values, rows, base_url)
        except Exception:  # noqa: BLE001 - one odd element must not block the write
            continue
    return _deduplicated(rows)


def rows_from_values(
    res_type: str, values: dict[str, list[Any]], base_url: str | None = None
) -> IndexRows:
    """Index rows from parameter values a caller already picked out of a resource it built
    itself (a fixed shape, written very often: AuditEvents), skipping expression evaluation.
    Its tests must show the result equals `extract` of the same resource."""
    rows = IndexRows()
    params = params_for(res_type)
    for code, found in values.items():
        if found:
            _BUILDERS[params[code].type](code, found, rows, base_url)
    return _deduplicated(rows)


def _deduplicated(rows: IndexRows) -> IndexRows:
    for name in _ROWS:
        lst = getattr(rows, name)
        if len(lst) > 1:
            setattr(rows, name, list(dict.fromkeys(lst)))
    return rows
