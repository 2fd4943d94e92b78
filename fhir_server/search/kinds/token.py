"""token parameters: `[system]|[code]` against codes, identifiers, booleans, contact points
(R4 §3.1.1.4.9); `:text` on the display or text, `:not` (the Compiler negates `match`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_

from fhir_server.errors import bad_request
from fhir_server.schema import idx_token
from fhir_server.schema import text_equals as _equals
from fhir_server.search.kinds.base import IndexRows, Kind, like_prefix, no_modifier, sql_equals
from fhir_server.search.kinds.base import text as _str
from fhir_server.search.kinds.escape import split_pipe, unescape
from fhir_server.search.kinds.string import normalize_string

CONTACT_POINT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def _text(v: Any) -> str | None:
    return normalize_string(v) if type(v) is str and v else None


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
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


def _parts(code: str, modifier: str, value: str) -> list[str]:
    """[code] or [system, code] of one value (the modifiers `:text` handles apart)."""
    if modifier not in ("", "not"):
        no_modifier("token", code, modifier)
    parts = split_pipe(value)
    if len(parts) > 2:
        raise bad_request(f"Invalid token '{value}' for '{code}': expected [system]|[code]")
    return parts


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    if modifier == "text":
        return c.text.like(like_prefix(normalize_string(unescape(value))), escape="\\")  # type: ignore[no-any-return]
    parts = _parts(code, modifier, value)
    if len(parts) == 1:
        return _equals(c.code, parts[0])
    system, value = parts
    if not system:
        return and_(c.system.is_(None), _equals(c.code, value))
    if not value:
        return _equals(c.system, system)
    return and_(_equals(c.system, system), _equals(c.code, value))


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    if modifier == "text":
        norm = normalize_string(unescape(value))
        return any(text is not None and text.startswith(norm) for *_, text in rows)
    parts = _parts(code, modifier, value)
    if len(parts) == 1:
        return any(row_code == parts[0] for _, _, row_code, _ in rows)
    system, value = parts
    for _, row_system, row_code, _ in rows:
        if not system:
            if row_system is None and row_code == value:
                return True
        elif row_system == system and (not value or row_code == value):
            return True
    return False


def direct(code: str, value: str, base: str) -> tuple[str, list[Any]] | None:
    parts = split_pipe(value)
    if len(parts) == 1:
        return sql_equals("code", parts[0])
    if len(parts) != 2:
        return None
    system, code = parts
    if not system:
        sql, params = sql_equals("code", code)
        return f"t.system IS NULL AND {sql}", params
    if not code:
        return sql_equals("system", system)
    (system_sql, system_params), (code_sql, code_params) = (
        sql_equals("system", system),
        sql_equals("code", code),
    )
    return f"{system_sql} AND {code_sql}", [*system_params, *code_params]


KIND = Kind("token", "tokens", idx_token, build, condition, match, ("code", "code"), 1, direct)
