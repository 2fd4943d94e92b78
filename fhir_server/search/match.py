"""Does one resource match simple search parameters? Judged on its index rows in memory.

For content that is not stored yet (a write checked against a SMART query restriction such
as `patient/Observation.cu?category=...|laboratory`). Same semantics as the SQL compiler for
token, reference, string and uri parameters, several values OR-ed; anything else (other
types, modifiers, chains) answers with a reason instead of guessing, so a restriction is
never silently widened.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.search.extract import IndexRows, normalize_string, split_reference
from fhir_server.search.registry import params_for


def unmatched(res_type: str, rows: IndexRows, query: Iterable[tuple[str, str]]) -> str | None:
    """None when every parameter matches, else the first one that does not (and why)."""
    for name, value in query:
        param = params_for(res_type).get(name)
        if param is None or ":" in name or "." in name:
            return f"'{name}' cannot be checked on {res_type} content"
        values = [v for v in value.split(",") if v]
        test = _TESTS.get(param.type)
        if test is None:
            return f"'{name}' ({param.type}) restrictions cannot be checked on content"
        if not any(test(rows, name, v) for v in values):
            return f"{res_type} content does not match {name}={value}"
    return None


def _token(rows: IndexRows, name: str, value: str) -> bool:
    system, bar, code = value.partition("|")
    for param, sys, val, _ in rows.tokens:
        if param != name:
            continue
        if not bar:
            if val == value:
                return True
        elif not system:
            if sys is None and val == code:
                return True
        elif sys == system and (not code or val == code):
            return True
    return False


def _reference(rows: IndexRows, name: str, value: str) -> bool:
    target_type, target_id = split_reference(value)
    for param, ref_type, ref_id, url in rows.references:
        if param != name:
            continue
        if url == value or (ref_id == (target_id or value) and target_type in (None, ref_type)):
            return True
    return False


def _string(rows: IndexRows, name: str, value: str) -> bool:
    wanted = normalize_string(value)
    return any(param == name and norm.startswith(wanted) for param, norm, _ in rows.strings)


def _uri(rows: IndexRows, name: str, value: str) -> bool:
    return any(param == name and uri == value for param, uri in rows.uris)


_TESTS = {"token": _token, "reference": _reference, "string": _string, "uri": _uri}
