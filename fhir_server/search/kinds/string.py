"""string parameters: case-, accent- and whitespace-insensitive "starts with" (R4 §3.1.1.4.8),
`:exact` on the text as written, `:contains` anywhere in the folded text."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_

from fhir_server.schema import INDEX_PREFIX as PREFIX
from fhir_server.schema import idx_string, prefix_of
from fhir_server.search.kinds.base import (
    IndexRows,
    Kind,
    like_prefix,
    no_modifier,
    prefix_range,
)
from fhir_server.search.kinds.escape import unescape

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_VALUE = f"substr(t.value, 1, {PREFIX})"  # the indexed prefix (models.prefix_of)


def normalize_string(s: str) -> str:
    """Case-, accent- and whitespace-insensitive form used by string search (and :text)."""
    if s.isascii():
        return " ".join(s.casefold().split())
    decomposed = unicodedata.normalize("NFKD", s)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.strings
    for v in values:
        if type(v) is str:
            if v:
                out.append((code, normalize_string(v), v))
        elif type(v) is dict:  # HumanName or Address: each part
            keys = _NAME_PARTS if ("family" in v or "given" in v) else _ADDRESS_PARTS
            for k in keys:
                part = v.get(k)
                for s in part if type(part) is list else (part,):
                    if type(s) is str and s:
                        out.append((code, normalize_string(s), s))


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "exact":
        return c.exact == value  # type: ignore[no-any-return]
    norm = normalize_string(value)
    if modifier == "contains":
        return c.value.like("%" + like_prefix(norm), escape="\\")  # type: ignore[no-any-return]
    no_modifier("string", code, modifier)
    if not norm:
        return c.value.like(like_prefix(norm), escape="\\")  # type: ignore[no-any-return]
    low, high, pattern = prefix_range(norm)
    key = prefix_of(c.value)
    return and_(key >= low, key < high, c.value.like(pattern, escape="\\"))


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    value = unescape(value)
    if modifier == "exact":
        return any(exact == value for _, _, exact in rows)
    norm = normalize_string(value)
    if modifier == "contains":
        return any(norm in folded for _, folded, _ in rows)
    no_modifier("string", code, modifier)
    return any(folded.startswith(norm) for _, folded, _ in rows)


def direct(code: str, value: str, base: str) -> tuple[str, list[Any]] | None:
    norm = normalize_string(value)
    if not norm:
        return None
    return f"{_VALUE} >= ? AND {_VALUE} < ? AND t.value LIKE ? ESCAPE '\\'", [*prefix_range(norm)]


KIND = Kind("string", "strings", idx_string, build, condition, match, ("value", "value"), 1, direct)
