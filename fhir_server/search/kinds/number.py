"""number parameters: a value stands for its implicit range by significant figures (`5.4` is
[5.35, 5.45)), compared with the prefixes (R4 §3.1.1.4.1); quantity.py reuses `compare`."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeGuard

from sqlalchemy import ColumnElement, and_, not_

from fhir_server.schema import idx_number
from fhir_server.search.kinds.base import IndexRows, Kind, no_modifier, number_range, split_prefix
from fhir_server.search.kinds.escape import unescape


def is_number(v: Any) -> TypeGuard[int | float | Decimal]:
    """A JSON number: int, float, or a decimal kept as written (`fhirjson.FhirDecimal`) whose
    magnitude the index's doubles can hold (`1e400` is kept in the body, not indexed)."""
    if type(v) is int:
        return True
    return (type(v) is float or isinstance(v, Decimal)) and abs(float(v)) < 1e308


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    for v in values:
        if is_number(v):
            rows.numbers.append((code, float(v), float(v)))


Parsed = tuple[str, float, float, float]  # prefix, value, its implicit range [low, high)


def parse(code: str, value: str) -> Parsed:
    """(prefix, value, low, high) of one escaped search value; malformed: the client's error."""
    prefix, text = split_prefix(unescape(value))
    return (prefix, *number_range(text, code))


def compare(parsed: Parsed, low: Any, high: Any) -> Any:
    """The prefix test of [low, high) against a parsed value, on columns (SQL) or on floats
    (in memory): comparisons are the same operators, only and/not differ."""
    prefix, number, q_low, q_high = parsed
    sql = not isinstance(low, float)
    if prefix in ("eq", "ne"):
        inside = and_(low >= q_low, high < q_high) if sql else low >= q_low and high < q_high
        if prefix == "eq":
            return inside
        return not_(inside) if sql else not inside
    if prefix == "gt":
        return high > number
    if prefix == "lt":
        return low < number
    if prefix == "ge":
        return high >= number
    if prefix == "le":
        return low <= number
    if prefix == "sa":
        return low > number
    if prefix == "eb":
        return high < number
    near = abs(number) * 0.1  # ap
    if sql:
        return and_(low <= number + near, high >= number - near)
    return low <= number + near and high >= number - near


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    no_modifier("number", code, modifier)
    return compare(parse(code, value), c.low, c.high)  # type: ignore[no-any-return]


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    no_modifier("number", code, modifier)
    parsed = parse(code, value)
    return any(compare(parsed, low, high) for _, low, high in rows)


KIND = Kind(
    "number", "numbers", idx_number, build, condition, match, ("low", "low"), 2, prefixed=True
)
