"""What every search-parameter kind module provides, and the helpers several of them share.

A kind module (token.py, string.py, ...) holds everything one FHIR parameter type means: how a
resource's values become index rows, the SQL condition one search value puts on those rows,
the SQL text of the direct fast path (if the kind has one) and the same test on rows in memory.
Keeping the four together is what keeps them agreeing (tests/search/test_kinds_agree.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, Table

from fhir_server.errors import bad_request
from fhir_server.schema import INDEX_PREFIX as PREFIX


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
    # (param, element, part, *the idx_composite value columns): see composite.py
    composites: list[tuple[Any, ...]] = field(default_factory=list)


# (parameter code, values the expression found, rows to add to, server base URL)
Builder = Callable[[str, list[Any], IndexRows, str | None], None]
# (parameter code, the index table's columns, modifier, one escaped value, server base URL)
Condition = Callable[[str, Any, str, str, str], ColumnElement[bool]]
# (parameter code, its rows of the kind, modifier, one escaped value, server base URL)
Matcher = Callable[[str, Sequence[tuple[Any, ...]], str, str, str], bool]
# (parameter code, one escaped value without modifier, server base URL) -> SQL text on alias
# `t` and its parameters, or None when the value is not simple enough for the fast path
Direct = Callable[[str, str, str], tuple[str, list[Any]] | None]


@dataclass(frozen=True, slots=True)
class Kind:
    """One parameter kind as the generic search code sees it (see `kinds.KINDS`)."""

    name: str
    rows: str  # the IndexRows attribute holding its rows
    table: Table
    build: Builder
    condition: Condition
    match: Matcher
    sort: tuple[str, str]  # the column sorted by, ascending and descending
    selectivity: int  # how few rows a value usually matches (lower: fewer), see query.py
    direct: Direct | None = None
    prefixed: bool = False  # takes eq/ne/gt/... prefixes; `ne` is the complement of `eq`


# --- shared helpers ------------------------------------------------------------------------


def no_modifier(kind: str, code: str, modifier: str) -> None:
    if modifier:
        raise bad_request(f"Modifier ':{modifier}' is not supported on {kind} parameter '{code}'")


def like_prefix(value: str) -> str:
    """A LIKE pattern (ESCAPE '\\') for values starting with `value`."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def prefix_range(norm: str) -> tuple[str, str, str]:
    """A non-empty folded prefix as [low, high) of the indexed prefix plus its LIKE pattern.

    LIKE with ESCAPE cannot use a B-tree index (SQLite, and PostgreSQL outside the C
    collation); the equivalent range on the folded value's indexed prefix (its first
    `PREFIX` characters, models.prefix_of) can. LIKE on the whole value stays the exact test.
    """
    key = norm[:PREFIX]
    return key, key[:-1] + chr(ord(key[-1]) + 1), like_prefix(norm)


def sql_equals(column: str, value: str) -> tuple[str, list[Any]]:
    """models.text_equals as SQL text on alias `t`: the indexed prefix, then the rest."""
    test = f"substr(t.{column}, 1, {PREFIX}) = ?"
    if len(value) < PREFIX:
        return test, [value]
    return f"{test} AND substr(t.{column}, {PREFIX + 1}) = ?", [value[:PREFIX], value[PREFIX:]]


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")
MAX_NUMBER = Decimal("1e300")  # number and quantity values; the index stores doubles
MIN_NUMBER = Decimal("1e-300")


def split_prefix(value: str) -> tuple[str, str]:
    """(`eq`/`ne`/..., the rest) of a date, number or quantity value; no prefix means `eq`."""
    match = _PREFIX_RE.match(value)
    if match:
        return match.group(1), value[2:]
    return "eq", value


def number_range(text: str, code: str) -> tuple[float, float, float]:
    """The value and its implicit range by significant figures (5.4 -> [5.35, 5.45))."""
    try:
        number = Decimal(text) if len(text) <= 64 else Decimal("NaN")
    except InvalidOperation:
        raise bad_request(f"Invalid number '{text[:64]}' for '{code}'") from None
    if not number.is_finite() or not -MAX_NUMBER <= number <= MAX_NUMBER:
        raise bad_request(f"Invalid number '{text[:64]}' for '{code}': not a number in range")
    if number and abs(number) < MIN_NUMBER:
        number = Decimal(0)
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return float(number), float(number - half), float(number + half)


def text(v: Any) -> str | None:
    """A non-empty string, else None (index columns hold NULL, not '')."""
    return v if type(v) is str and v else None
