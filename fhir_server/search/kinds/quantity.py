"""quantity parameters: `[prefix]number[|system|code]` (R4 §3.1.1.4.3). The number compares as
for number parameters; a unit given with a system must match system and code, without one the
code or the unit as written. Money indexes as currency in ISO 4217; a Range as its bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from fhir_server.errors import bad_request
from fhir_server.schema import idx_quantity
from fhir_server.search.kinds.base import IndexRows, Kind, no_modifier, number_range, split_prefix
from fhir_server.search.kinds.base import text as _str
from fhir_server.search.kinds.escape import split_pipe
from fhir_server.search.kinds.number import Parsed, compare, is_number

MIN_QTY = -1e300  # open ends of a Range: a finite "infinity" every driver stores as a float
MAX_QTY = 1e300
ISO_4217 = "urn:iso:std:iso:4217"


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.quantities
    for v in values:
        if type(v) is not dict:
            continue
        value = v.get("value")
        if is_number(value):
            x = float(value)
            if "currency" in v:  # Money
                out.append((code, x, x, ISO_4217, _str(v.get("currency")), None))
            else:
                out.append(
                    (code, x, x, _str(v.get("system")), _str(v.get("code")), _str(v.get("unit")))
                )
        elif "low" in v or "high" in v:  # Range
            lo, hi = v.get("low"), v.get("high")
            lo_v = lo.get("value") if type(lo) is dict else None
            hi_v = hi.get("value") if type(hi) is dict else None
            if not is_number(lo_v) and not is_number(hi_v):
                continue
            unit_src: dict[str, Any] = lo if is_number(lo_v) else hi  # type: ignore[assignment]
            out.append(
                (code, float(lo_v) if is_number(lo_v) else MIN_QTY,
                 float(hi_v) if is_number(hi_v) else MAX_QTY,
                 _str(unit_src.get("system")), _str(unit_src.get("code")),
                 _str(unit_src.get("unit")))
            )  # fmt: skip
        # SampledData and anything else: not indexed


def _parse(code: str, modifier: str, value: str) -> tuple[Parsed, str | None, str | None]:
    """(the number parsed, system or None, unit code or None) of one search value."""
    no_modifier("quantity", code, modifier)
    prefix, rest = split_prefix(value)
    parts = split_pipe(rest)
    if len(parts) not in (1, 3):
        raise bad_request(f"Invalid quantity '{value}': expected [prefix]number|system|code")
    parsed: Parsed = (prefix, *number_range(parts[0], code))
    if len(parts) == 1:
        return parsed, None, None
    return parsed, parts[1] or None, parts[2] or None


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    parsed, system, unit = _parse(code, modifier, value)
    cond = compare(parsed, c.low, c.high)
    if system is not None:
        return and_(cond, c.system == system, c.code == (unit or ""))
    if unit is not None:
        return and_(cond, or_(c.code == unit, c.unit == unit))
    return cond  # type: ignore[no-any-return]


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    parsed, system, unit = _parse(code, modifier, value)
    for _, low, high, row_system, row_code, row_unit in rows:
        if system is not None:
            if row_system != system or row_code != (unit or ""):
                continue
        elif unit is not None and unit not in (row_code, row_unit):
            continue
        if compare(parsed, low, high):
            return True
    return False


KIND = Kind(
    "quantity",
    "quantities",
    idx_quantity,
    build,
    condition,
    match,
    ("low", "low"),
    2,
    prefixed=True,
)
