"""uri parameters: exact (case-sensitive) match, `:below` (the value is a prefix of the URI) and
`:above` (the URI is a prefix of the value) (R4 §3.1.1.4.13)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal_column

from fhir_server.schema import INDEX_PREFIX as PREFIX
from fhir_server.schema import idx_uri, prefix_of
from fhir_server.schema import text_equals as _equals
from fhir_server.search.kinds.base import IndexRows, Kind, no_modifier
from fhir_server.search.kinds.escape import unescape


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    for v in values:
        if type(v) is str and v:
            rows.uris.append((code, v))


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "below":
        # substr, not LIKE: SQLite's LIKE ignores ASCII case, and URIs are case-sensitive
        start = func.substr(c.uri, literal_column("1"), len(value))
        return start == value  # type: ignore[no-any-return]
    if modifier == "above":
        prefixes = [value[:i] for i in range(1, len(value) + 1)]
        return and_(
            prefix_of(c.uri).in_(sorted({p[:PREFIX] for p in prefixes})),
            c.uri.in_(prefixes),
        )
    no_modifier("uri", code, modifier)
    return _equals(c.uri, value)


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    value = unescape(value)
    if modifier == "below":
        return any(uri.startswith(value) for _, uri in rows)
    if modifier == "above":
        return any(value.startswith(uri) for _, uri in rows)
    no_modifier("uri", code, modifier)
    return any(uri == value for _, uri in rows)


KIND = Kind("uri", "uris", idx_uri, build, condition, match, ("uri", "uri"), 1)
