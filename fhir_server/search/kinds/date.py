"""date parameters: every value is a range [low, high) in UTC epoch microseconds at the
precision written, compared with the prefixes eq ne gt lt ge le sa eb ap (R4 §3.1.1.4.2)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_

from fhir_server.clock import now_us
from fhir_server.errors import bad_request
from fhir_server.schema import idx_date
from fhir_server.search.kinds.base import IndexRows, Kind, no_modifier, split_prefix
from fhir_server.search.kinds.escape import unescape

# Open ends of a Period: 0001-01-01 and 10000-01-01 (UTC) in epoch microseconds.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_800_000_000

_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


def _day_us(y: int, m: int, d: int) -> int:
    return (date(y, m, d).toordinal() - _EPOCH_ORDINAL) * _DAY_US


def date_range(value: str) -> tuple[int, int]:
    """FHIR date/dateTime/instant -> [low, high) in UTC epoch microseconds at its precision.

    '2020' covers the year, '2020-03' the month, '2020-03-04' the day, '...T10:00' the minute,
    '...T10:00:00' the second, fractions their digits. A zone converts to UTC; no zone is UTC.
    """
    m = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not a FHIR date/dateTime: {value!r}")
    ys, ms, ds, hs, mins, ss, frac, zone = m.groups()
    y = int(ys)
    if ms is None:
        return _day_us(y, 1, 1), _day_us(y, 12, 31) + _DAY_US
    mo = int(ms)
    if ds is None:
        start = _day_us(y, mo, 1)
        end = _day_us(y, 12, 31) + _DAY_US if mo == 12 else _day_us(y, mo + 1, 1)
        return start, end
    day = _day_us(y, mo, int(ds))
    if hs is None:
        return day, day + _DAY_US
    h, mi = int(hs), int(mins)
    sec = int(ss) if ss is not None else 0
    if h > 23 or mi > 59 or sec > 60:
        raise ValueError(f"time out of range: {value!r}")
    offset = 0
    if zone and zone != "Z":
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 14 or zm > 59:
            raise ValueError(f"zone out of range: {value!r}")
        offset = (zh * 3600 + zm * 60) * (1 if zone[0] == "+" else -1)
    low = day + ((h * 3600 + mi * 60 + sec - offset) * 1_000_000)
    if ss is None:
        return low, low + 60_000_000
    if frac is None:
        return low, low + 1_000_000
    digits = frac[:6]
    width = 10 ** (6 - len(digits))
    low += int(digits) * width
    return low, low + width


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.dates
    for v in values:
        try:
            if type(v) is str:
                out.append((code, *date_range(v)))
            elif type(v) is dict:
                if "start" in v or "end" in v:  # Period
                    start, end = v.get("start"), v.get("end")
                    low = date_range(start)[0] if start else MIN_US
                    high = date_range(end)[1] if end else MAX_US
                    out.append((code, low, high))
                events = v.get("event")
                if type(events) is list:  # Timing
                    for e in events:
                        if type(e) is str:
                            out.append((code, *date_range(e)))
        except (ValueError, TypeError, OverflowError):
            continue


def query_range(value: str) -> tuple[str, int, int]:
    """(prefix, low, high) of one search value; a malformed one is the client's error."""
    prefix, text = split_prefix(unescape(value))
    try:
        return (prefix, *date_range(text))
    except (ValueError, OverflowError):
        raise bad_request(
            f"Invalid date '{value}': expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]"
        ) from None


def _ap_gap(q_low: int) -> int:
    """ap: within 10% of the distance between the value and now (at least a day)."""
    return max(abs(now_us() - q_low) // 10, _DAY_US)


def range_condition(value: str, low: Any, high: Any) -> ColumnElement[bool]:
    """Range semantics of FHIR date search: the target range [low, high) vs. the query's
    (also `_lastUpdated`, whose range is one microsecond)."""
    prefix, q_low, q_high = query_range(value)
    contained = and_(low >= q_low, high <= q_high)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > q_high  # type: ignore[no-any-return]
    if prefix == "lt":
        return low < q_low  # type: ignore[no-any-return]
    if prefix == "ge":
        return or_(high > q_high, contained)
    if prefix == "le":
        return or_(low < q_low, contained)
    if prefix == "sa":
        return low >= q_high  # type: ignore[no-any-return]
    if prefix == "eb":
        return high <= q_low  # type: ignore[no-any-return]
    gap = _ap_gap(q_low)
    return and_(low < q_high + gap, high > q_low - gap)


def range_matches(parsed: tuple[str, int, int], low: int, high: int) -> bool:
    """`range_condition` for one range in memory (`parsed`: `query_range` of the value)."""
    prefix, q_low, q_high = parsed
    contained = low >= q_low and high <= q_high
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not contained
    if prefix == "gt":
        return high > q_high
    if prefix == "lt":
        return low < q_low
    if prefix == "ge":
        return high > q_high or contained
    if prefix == "le":
        return low < q_low or contained
    if prefix == "sa":
        return low >= q_high
    if prefix == "eb":
        return high <= q_low
    gap = _ap_gap(q_low)
    return low < q_high + gap and high > q_low - gap


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    no_modifier("date", code, modifier)
    return range_condition(value, c.low, c.high)


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    no_modifier("date", code, modifier)
    parsed = query_range(value)
    return any(range_matches(parsed, low, high) for _, low, high in rows)


KIND = Kind("date", "dates", idx_date, build, condition, match, ("low", "high"), 2, prefixed=True)
