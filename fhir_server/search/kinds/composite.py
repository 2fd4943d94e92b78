"""composite parameters: `code-value-quantity=http://loinc.org|8480-6$gt100` (R4 §3.1.1.4.8).

A composite value is one value per component, separated by `$` (escaped `\\$`, escape.py), and
a resource matches when ONE element the composite's expression selects (the Observation
itself, one `Observation.component`, one `useContext`) satisfies every component at once: a
blood pressure whose systolic component is 120 and whose diastolic is 80 does not match
`component-code-value-quantity=<systolic>$80`. So the index keeps the element: each component
value of each element is a row of `idx_composite` (element number, component number, and the
columns of the component's own kind), and each component is tested by its own kind's
condition and matcher, with that kind's prefixes and syntax (`gt100`, `system|code`). An
element without a value for every component is not indexed: it can match nothing.
Modifiers are refused (FHIR defines none for composites); `:missing` is generic (query.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, and_, exists

from fhir_server.errors import bad_request
from fhir_server.schema import idx_composite
from fhir_server.search.fhirpath import Compiled, compile_path
from fhir_server.search.fhirpath import root_keys as fhirpath_root_keys
from fhir_server.search.kinds import date, number, quantity, reference, string, token, uri
from fhir_server.search.kinds.base import IndexRows, Kind, no_modifier
from fhir_server.search.kinds.escape import split
from fhir_server.search.registry import SearchParam, params_for, resource_types

# The value columns of idx_composite, in table order, and where each kind keeps its values:
# a kind row (code, *values) becomes (code, element, part, *VALUES with the kind's filled in).
VALUES = (
    "system", "code", "text", "value", "exact", "low", "high", "dlow", "dhigh", "unit",
    "target_type", "target_id", "url", "uri",
)  # fmt: skip
COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("system", "code", "text"),
    "string": ("value", "exact"),
    "date": ("dlow", "dhigh"),
    "reference": ("target_type", "target_id", "url"),
    "quantity": ("low", "high", "system", "code", "unit"),
    "number": ("low", "high"),
    "uri": ("uri",),
}
# the kinds a component can be of (every kind but composite)
_PARTS = {k.name: k for k in (token.KIND, string.KIND, date.KIND, reference.KIND, quantity.KIND,
                              number.KIND, uri.KIND)}  # fmt: skip
_AT = {kind: tuple(VALUES.index(c) for c in cols) for kind, cols in COLUMNS.items()}
_T = re.compile(r"\bt\.")


def components(value: str) -> list[str]:
    """The `$`-separated components of one composite value, still escaped: each is a value of
    its component's kind, which unescapes it (after splitting `|`, for a token)."""
    return split(value, "$")


@cache
def _components() -> dict[str, tuple[tuple[str, str, str], ...]]:
    """Composite code -> its (component code, kind, expression): the same for every type
    that has the code (tests/search/test_composite.py checks the registry says so)."""
    out: dict[str, tuple[tuple[str, str, str], ...]] = {}
    for res_type in sorted(resource_types()):
        for code, param in params_for(res_type).items():
            if param.type == "composite" and param.components:
                out.setdefault(code, param.components)
    return out


def _kinds(code: str) -> list[tuple[str, Kind]]:
    """(component code, its kind) per component of composite `code`."""
    found = _components().get(code)
    if not found or any(kind not in _PARTS for _, kind, _ in found):
        raise bad_request(f"Composite parameter '{code}' is not searchable")
    return [(c, _PARTS[kind]) for c, kind, _ in found]


def _parts(code: str, modifier: str, value: str) -> tuple[list[tuple[str, Kind]], list[str]]:
    no_modifier("composite", code, modifier)
    kinds, parts = _kinds(code), components(value)
    if len(parts) != len(kinds):
        raise bad_request(
            f"Invalid value '{value[:64]}' for composite '{code}': expected "
            + "$".join(f"[{c}]" for c, _ in kinds)
        )
    return kinds, parts


# --- index rows ---------------------------------------------------------------------------


def selector(param: SearchParam) -> Compiled:
    """What extraction evaluates for a composite: its elements, each with the resource (a
    component may read `%resource`) and the compiled component expressions."""
    elements = compile_path(param.expression)
    parts = []
    for c, kind, expression in param.components:
        whole = expression.startswith("%resource.")
        path = f"{param.resource_type}.{expression[10:]}" if whole else expression
        parts.append((c, kind, whole, compile_path(path)))
    plan = tuple(parts)

    def select(resource: dict[str, Any]) -> list[Any]:
        return [(plan, resource, e) for e in elements(resource) if type(e) is dict]

    return select


def root_keys(param: SearchParam) -> frozenset[str] | None:
    """`fhirpath.root_keys` for a composite: of its expression, or, when that is the resource
    itself, of one of its components (an element lacking any component gets no rows): the
    one with the fewest keys, usually the most telling (`valueQuantity` rather than `code`)."""
    keys = fhirpath_root_keys(param.expression)
    if keys is not None or not param.components:
        return keys
    if param.expression.strip() != param.resource_type:
        return None
    found = []
    for _, _, expression in param.components:
        whole = expression.startswith("%resource.")
        path = f"{param.resource_type}.{expression[10:]}" if whole else expression
        keys = fhirpath_root_keys(path)
        if keys is not None:
            found.append(keys)
    return min(found, key=len) if found else None


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.composites
    for element, (plan, resource, node) in enumerate(values):
        inputs = []  # every component's values first: one lacking means no rows to build
        for _, _, whole, fn in plan:
            selected = fn(resource if whole else node)
            if not selected:
                break
            inputs.append(selected)
        else:
            if not _element_rows(code, element, plan, inputs, out, base):
                return


def _element_rows(
    code: str,
    element: int,
    plan: Any,
    inputs: list[list[Any]],
    out: list[tuple[Any, ...]],
    base: str | None,
) -> bool:
    """Add the rows of one element whose components all have values (none when one gives
    no row of its kind); False when a component's kind cannot be indexed (stop)."""
    found: list[tuple[Any, ...]] = []
    for part, (c, kind_name, _, _) in enumerate(plan):
        kind = _PARTS.get(kind_name)
        if kind is None:
            return False
        one = IndexRows()
        kind.build(c, inputs[part], one, base)
        kind_rows = list(dict.fromkeys(getattr(one, kind.rows)))
        if not kind_rows:
            return True  # an element lacking a component can match nothing
        at = _AT[kind_name]
        for kind_row in kind_rows:
            row: list[Any] = [None] * len(VALUES)
            for i, v in zip(at, kind_row[1:], strict=True):
                row[i] = v
            found.append((code, element, part, *row))
    out.extend(found)
    return True


def _kind_rows(kind: Kind, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Composite rows of one component back in the row shape of its kind."""
    at = _AT[kind.name]
    return [(r[0], *(r[3 + i] for i in at)) for r in rows]


# --- SQL ----------------------------------------------------------------------------------


def _columns(c: Any, kind: Kind) -> SimpleNamespace:
    """idx_composite columns under the names `kind`'s condition uses for its own table."""
    own = [col.name for col in kind.table.columns][3:]  # after resource_pk, res_type, param
    return SimpleNamespace(**{o: c[n] for o, n in zip(own, COLUMNS[kind.name], strict=True)})


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    kinds, parts = _parts(code, modifier, value)
    (first_code, first), tests = kinds[0], []
    tests.append(c.part == 0)
    tests.append(first.condition(first_code, _columns(c, first), "", parts[0], base))
    for part, ((part_code, kind), part_value) in enumerate(zip(kinds, parts, strict=True)):
        if part == 0:
            continue
        other = idx_composite.alias(f"composite_part{part}")
        oc = other.c
        tests.append(
            exists().where(
                oc.resource_pk == c.resource_pk,
                oc.param == c.param,
                oc.element == c.element,
                oc.part == part,
                kind.condition(part_code, _columns(oc, kind), "", part_value, base),
            )
        )
    return and_(*tests)


def direct(code: str, value: str, base: str) -> tuple[str, list[Any]] | None:
    """The fast path when every component's kind has one (token, string, reference): the
    first component on `t`, the others as EXISTS on the same element."""
    try:
        kinds, parts = _parts(code, "", value)
    except Exception:  # noqa: BLE001 - the general path gives the client its error
        return None
    sql: list[str] = ["t.part = 0"]
    params: list[Any] = []
    for part, ((part_code, kind), part_value) in enumerate(zip(kinds, parts, strict=True)):
        test = kind.direct(part_code, part_value, base) if kind.direct is not None else None
        if test is None:
            return None
        if part == 0:
            sql.append(test[0])
        else:
            alias = f"t{part}"
            sql.append(
                f"EXISTS (SELECT 1 FROM {idx_composite.name} {alias} WHERE "
                f"{alias}.resource_pk = t.resource_pk AND {alias}.param = t.param AND "
                f"{alias}.element = t.element AND {alias}.part = {part} AND "
                f"{_T.sub(alias + '.', test[0])})"
            )
        params.extend(test[1])
    return " AND ".join(sql), params


# --- in memory ----------------------------------------------------------------------------


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    kinds, parts = _parts(code, modifier, value)
    for (part_code, kind), part_value in zip(kinds, parts, strict=True):
        kind.match(part_code, [], "", part_value, base)  # a malformed value is refused anyway
    elements: dict[int, dict[int, list[tuple[Any, ...]]]] = {}
    for row in rows:
        elements.setdefault(row[1], {}).setdefault(row[2], []).append(row)
    for by_part in elements.values():
        if all(
            kind.match(part_code, _kind_rows(kind, by_part.get(part, [])), "", part_value, base)
            for part, ((part_code, kind), part_value) in enumerate(zip(kinds, parts, strict=True))
        ):
            return True
    return False


KIND = Kind(
    "composite",
    "composites",
    idx_composite,
    build,
    condition,
    match,
    ("code", "code"),
    1,
    direct,
)
