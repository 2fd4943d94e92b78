"""The codes of the value sets bindings name: the generated R4 expansions, then whatever the
terminology service or stored ValueSets know.

Why a hook (`set_code_source`): value sets an operator stores (or the HL7 v2 tables a
terminology service carries) are known only at run time, by a package above this one; the
composition root plugs that lookup in. Without one, a binding to a value set nobody can
expand is not checked (and `$validate` says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

Codes = dict[str, frozenset[str]]
# (value set url) -> {system: codes}, or None when the source does not know the value set
CodeSource = Callable[[str], "Codes | None"]
_sources: list[CodeSource] = []
# (value set url, system or None, code) -> member?, None when it cannot tell: the terminology
# service's question (fhir_server.terminology.contains), asked for value sets no table holds
Membership = Callable[[str, "str | None", str], "bool | None"]
_membership: list[Membership] = []


def set_membership(member: Membership | None) -> None:
    """The terminology service the validator asks about value sets it cannot expand itself
    (stored ones, the HL7 v2 tables); the composition root plugs it in."""
    _membership.clear()
    if member is not None:
        _membership.append(member)


def membership() -> Membership | None:
    return _membership[0] if _membership else None


@cache
def _builtin() -> dict[str, Codes]:
    text = importlib_resources.files("fhir_server.validation").joinpath("data", "valuesets.json")
    data: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return {
        url: {system: frozenset(codes) for system, codes in by_system.items()}
        for url, by_system in data.items()
        if not url.startswith("_")
    }


@cache
def unexpanded() -> dict[str, str]:
    """Bound R4 value sets the generator could not expand, with why (external code systems)."""
    text = importlib_resources.files("fhir_server.validation").joinpath("data", "valuesets.json")
    found: dict[str, str] = json.loads(text.read_text(encoding="utf-8"))["_unexpanded"]
    return found


def set_code_source(source: CodeSource) -> None:
    """Add a run-time source of value set codes (the terminology service, stored ValueSets);
    asked, in order, for value sets the generated tables do not hold."""
    if source not in _sources:
        _sources.append(source)


def clear_code_sources() -> None:
    _sources.clear()


def codes_of(url: str) -> Codes | None:
    url = url.split("|", 1)[0]
    found = _builtin().get(url)
    if found is not None:
        return found
    for source in _sources:
        found = source(url)
        if found is not None:
            return found
    return None


def expand_stored(value_set: dict[str, Any], code_system: Callable[[str], Any]) -> Codes | None:
    """Codes of a stored ValueSet: its `compose` over explicit concepts, whole stored or R4
    code systems (`code_system(url)` -> CodeSystem resource or None) and other value sets.
    None when it draws on something unknown (filters other than is-a, external systems)."""
    compose = value_set.get("compose")
    if not isinstance(compose, dict) or not isinstance(compose.get("include"), list):
        expansion = value_set.get("expansion", {}).get("contains")
        if isinstance(expansion, list):
            out: dict[str, set[str]] = {}
            for c in _flatten(expansion):
                out.setdefault(c.get("system", ""), set()).add(c.get("code", ""))
            return {s: frozenset(c) for s, c in out.items()}
        return None
    result: dict[str, set[str]] = {}
    for inc in compose["include"]:
        part = _include(inc, code_system)
        if part is None:
            return None
        for system, codes in part.items():
            result.setdefault(system, set()).update(codes)
    for exc in compose.get("exclude", []) or []:
        part = _include(exc, code_system)
        if part is None:
            return None
        for system, codes in part.items():
            result[system] = result.get(system, set()) - codes
    return {system: frozenset(codes) for system, codes in result.items()}


def _flatten(contains: list[Any]) -> list[dict[str, Any]]:
    out = []
    for c in contains:
        if isinstance(c, dict):
            out.append(c)
            out.extend(_flatten(c.get("contains", []) or []))
    return out


def _include(inc: Any, code_system: Callable[[str], Any]) -> dict[str, set[str]] | None:
    if not isinstance(inc, dict):
        return None
    system = inc.get("system")
    out: dict[str, set[str]] = {}
    if isinstance(system, str):
        if inc.get("concept"):
            out[system] = {
                str(c["code"]) for c in inc["concept"] if isinstance(c, dict) and "code" in c
            }
        else:
            cs = code_system(system)
            if not isinstance(cs, dict) or cs.get("content") not in ("complete", None):
                return None
            tree = _tree(cs.get("concept", []) or [], ())
            codes = {c for c, _ in tree}
            for f in inc.get("filter", []) or []:
                if f.get("property") != "concept" or f.get("op") not in ("is-a", "descendent-of"):
                    return None
                v = f.get("value")
                codes &= {c for c, anc in tree if v in anc or (f["op"] == "is-a" and c == v)}
            out[system] = codes
    for vs in inc.get("valueSet", []) or []:
        other = codes_of(str(vs))
        if other is None:
            return None
        for s, c in other.items():
            out.setdefault(s, set()).update(c)
    return out


def _tree(concepts: list[Any], parents: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for c in concepts:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            out.append((c["code"], parents))
            out.extend(_tree(c.get("concept", []) or [], (*parents, c["code"])))
    return out
