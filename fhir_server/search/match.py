"""Does one resource match search parameters? Judged on its index rows in memory.

For content that is not stored yet (a write checked against a SMART query restriction such
as `patient/Observation.cu?category=...|laboratory`). Each kind's module (kinds/) holds its
in-memory test next to its SQL condition, reading values through the same escape-aware
splitter, so both answer alike (tests/search/test_kinds_agree.py). Chains, `_has` and what
the index rows cannot tell (`_id`, `_lastUpdated`, unsupported kinds) are refused with a
reason instead of guessed, so a restriction is never silently widened.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.errors import FhirError, bad_request
from fhir_server.search.kinds import KINDS
from fhir_server.search.kinds.base import IndexRows
from fhir_server.search.kinds.escape import alternatives
from fhir_server.search.registry import params_for

# The kinds and modifiers a SMART query restriction may use on content: the others depend on
# the clock (date `ap`) or on ranges a client rarely means as a restriction; refused for now.
RESTRICTION_KINDS = frozenset({"token", "reference", "string", "uri"})


class NotJudgeable(Exception):
    """The parameter cannot be decided from a resource's own index rows."""


def matches(res_type: str, rows: IndexRows, name: str, value: str, base_url: str = "") -> bool:
    """Whether content with `rows` satisfies `name=value` as the SQL search would decide.

    Raises NotJudgeable for what needs other resources or columns, FhirError (400) for a
    value the search would refuse too."""
    if name.startswith("_has:") or "." in name:
        raise NotJudgeable(f"'{name}' cannot be checked on {res_type} content")
    code, _, modifier = name.partition(":")
    param = params_for(res_type).get(code)
    if param is None or param.type not in KINDS or code in ("_id", "_lastUpdated"):
        raise NotJudgeable(f"'{name}' cannot be checked on {res_type} content")
    kind = KINDS[param.type]
    own = [r for r in getattr(rows, kind.rows) if r[0] == code]
    base = base_url.rstrip("/")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise bad_request(f"{name} must be true or false")
        return (not own) is (value == "true")
    # every alternative is judged (no short cut): a malformed one is refused, as by the SQL
    if modifier == "not" and kind.name == "token":
        return not any([kind.match(code, own, "", v, base) for v in alternatives(value)])
    found = False
    for v in alternatives(value):
        if kind.prefixed and v.startswith("ne"):
            found |= not kind.match(code, own, modifier, "eq" + v[2:], base)
        else:
            found |= kind.match(code, own, modifier, v, base)
    return found


def unmatched(
    res_type: str, rows: IndexRows, query: Iterable[tuple[str, str]], base_url: str = ""
) -> str | None:
    """None when every parameter matches, else the first one that does not (and why)."""
    for name, value in query:
        param = params_for(res_type).get(name)
        if param is None or ":" in name or "." in name:
            return f"'{name}' cannot be checked on {res_type} content"
        if param.type not in RESTRICTION_KINDS:
            return f"'{name}' ({param.type}) restrictions cannot be checked on content"
        try:
            if not matches(res_type, rows, name, value, base_url):
                return f"{res_type} content does not match {name}={value}"
        except (NotJudgeable, FhirError) as exc:
            return str(exc)
    return None
