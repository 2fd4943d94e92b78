"""Index extraction: a resource in, the rows of the search index tables out.

Runs on every write (the repository rewrites a resource's rows with its new version), so the
per-type plan (which parameters, which compiled FHIRPath, which row builder) is built once and
cached. The rules follow FHIR R4 search §3.1.1.x: which data types feed which parameter kind,
and how they become comparable values (normalised strings, token system/code, date ranges at
the precision written, reference type/id). A malformed value is skipped, never raised: a stored
resource must always be indexable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeGuard

from fhir_server.search.fhirpath import Compiled, UnsupportedExpression, compile_path
from fhir_server.search.registry import params_for, resource_types

# Open ends of a Period / Range: dates 0001-01-01 and 10000-01-01 (UTC) in epoch microseconds;
# quantities a finite "infinity" so every database driver stores it as a plain float.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_800_000_000
MIN_QTY = -1e300
MAX_QTY = 1e300

# Columns of the resource table, not index rows.
NOT_INDEXED = frozenset({"_id", "_lastUpdated"})
CONTACT_POINT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
ISO_4217 = "urn:iso:std:iso:4217"
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


@dataclass(slots=True)
class IndexRows:
    """The index rows of one resource; each tuple starts with the parameter code."""

    strings: list[tuple[str, str, str]] = field(default_factory=list)
    tokens: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)
    quantities: list[tuple[str, float, float, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    numbers: list[tuple[str, float, float]] = field(default_factory=list)
    uris: list[tuple[str, str]] = field(default_factory=list)


# --- values shared with the query side ----------------------------------------------------


def normalize_string(s: str) -> str:
    """Case-, accent- and whitespace-insensitive form used by string search (and :text)."""
    if s.isascii():
        return " ".join(s.casefold().split())
    decomposed = unicodedata.normalize("NFKD", s)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


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


def split_reference(ref: str, base_url: str | None = None) -> tuple[str | None, str | None]:
    """(type, id) of a reference string: 'Type/id', 'Type/id/_history/v', or an absolute URL.

    A URL under `base_url` is local; another absolute URL still yields its last 'Type/id' when
    Type is an R4 resource type. Contained ('#x'), urn: and odd strings give (None, None).
    """
    if base_url:
        base = base_url.rstrip("/") + "/"
        if ref.startswith(base):
            ref = ref[len(base) :]
    if not ref or ref[0] == "#" or ref.startswith("urn:"):
        return None, None
    ref = ref.split("?", 1)[0]
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if "://" not in ref and len(parts) != 2:
        return None, None
    if len(parts) >= 2 and 0 < len(parts[-1]) <= 64 and parts[-2] in resource_types():
        return parts[-2], parts[-1]  # a longer id is no FHIR id (and no index key)
    return None, None


# --- row builders, one per parameter kind --------------------------------------------------


def _is_number(v: Any) -> TypeGuard[int | float | Decimal]:
    return type(v) in (int, float) or isinstance(v, Decimal)


def _strings(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.strings
    for v in values:
        if type(v) is str:
            if v:
                out.append((code, normalize_string(v), v))
        elif type(v) is dict:
            keys = _NAME_PARTS if ("family" in v or "given" in v) else _ADDRESS_PARTS
            for k in keys:
                part = v.get(k)
                for s in part if type(part) is list else (part,):
                    if type(s) is str and s:
                        out.append((code, normalize_string(s), s))


def _text(v: Any) -> str | None:
    return normalize_string(v) if type(v) is str and v else None


def _tokens(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.tokens
    for v in values:
        t = type(v)
        if t is str:
            if v:
                out.append((code, None, v, None))
        elif t is bool:
            out.append((code, None, "true" if v else "false", None))
        elif t is dict:
            if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
                cc_text = v.get("text")
                codings = v.get("coding")
                if type(codings) is list and codings:
                    for c in codings:
                        if type(c) is dict:
                            out.append(
                                (code, _str(c.get("system")), _str(c.get("code")),
                                 _text(cc_text) or _text(c.get("display")))
                            )  # fmt: skip
                elif _text(cc_text):
                    out.append((code, None, None, _text(cc_text)))
            elif "value" in v:
                value = v.get("value")
                if type(value) is not str:
                    continue
                system = v.get("system")
                if system in CONTACT_POINT_SYSTEMS:  # ContactPoint: its system is not a URI
                    out.append((code, None, value, None))
                else:  # Identifier; :text searches Identifier.type.text
                    typ = v.get("type")
                    text = _text(typ.get("text")) if type(typ) is dict else None
                    out.append((code, _str(system), value, text))
            elif "code" in v or "system" in v:  # Coding
                out.append((code, _str(v.get("system")), _str(v.get("code")),
                            _text(v.get("display"))))  # fmt: skip


def _str(v: Any) -> str | None:
    return v if type(v) is str and v else None


def _dates(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
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


def _references(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.references
    for v in values:
        if type(v) is dict:
            ref = v.get("reference")
            if type(ref) is str and ref:
                out.append((code, *split_reference(ref, base), ref))
            elif (
                type(v.get("resourceType")) is str
                and type(v.get("id")) is str
                and len(v["resourceType"]) <= 64
                and len(v["id"]) <= 64
            ):
                # Bundle.entry[0].resource: an inline resource stands for its own reference
                out.append((code, v["resourceType"], v["id"], f"{v['resourceType']}/{v['id']}"))
            # a Reference with only an identifier is not indexed (no :identifier support)
        elif type(v) is str and v:  # canonical / uri
            out.append((code, None, None, v))


def _quantities(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.quantities
    for v in values:
        if type(v) is not dict:
            continue
        value = v.get("value")
        if _is_number(value):
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
            if not _is_number(lo_v) and not _is_number(hi_v):
                continue
            unit_src: dict[str, Any] = lo if _is_number(lo_v) else hi  # type: ignore[assignment]
            out.append(
                (code, float(lo_v) if _is_number(lo_v) else MIN_QTY,
                 float(hi_v) if _is_number(hi_v) else MAX_QTY,
                 _str(unit_src.get("system")), _str(unit_src.get("code")),
                 _str(unit_src.get("unit")))
            )  # fmt: skip
        # SampledData and anything else: not indexed


def _numbers(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    for v in values:
        if _is_number(v):
            rows.numbers.append((code, float(v), float(v)))


def _uris(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    for v in values:
        if type(v) is str and v:
            rows.uris.append((code, v))


Builder = Callable[[str, list[Any], IndexRows, str | None], None]
_BUILDERS: dict[str, Builder] = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "reference": _references,
    "quantity": _quantities,
    "number": _numbers,
    "uri": _uris,
}


_KINDS = ("strings", "tokens", "dates", "references", "quantities", "numbers", "uris")


@lru_cache(maxsize=512)
def _plan(resource_type: str) -> tuple[tuple[str, Builder, Compiled], ...]:
    """The (code, row builder, compiled expression) triples indexed for one resource type."""
    plan: list[tuple[str, Builder, Compiled]] = []
    for code, param in params_for(resource_type).items():
        builder = _BUILDERS.get(param.type)
        if builder is None or code in NOT_INDEXED or not param.expression:
            continue
        try:
            plan.append((code, builder, compile_path(param.expression)))
        except UnsupportedExpression:
            continue
    return tuple(plan)


def extract(resource: dict[str, Any], base_url: str | None = None) -> IndexRows:
    """All search-index rows of `resource` (deduplicated); malformed parts are skipped."""
    rows = IndexRows()
    res_type = resource.get("resourceType") if type(resource) is dict else None
    if type(res_type) is not str or res_type not in resource_types():
        return rows
    for code, builder, fn in _plan(res_type):
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
    for name in _KINDS:
        lst = getattr(rows, name)
        if len(lst) > 1:
            setattr(rows, name, list(dict.fromkeys(lst)))
    return rows
