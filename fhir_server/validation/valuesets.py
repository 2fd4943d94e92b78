"""The codes of the value sets bindings name: the generated R4 expansions, then whatever the
terminology service knows.

Why a hook (`set_membership`): value sets an operator stores (or the HL7 v2 tables the
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


def codes_of(url: str) -> Codes | None:
    """The generated expansion of an R4 value set (`url|version` accepted), or None."""
    return _builtin().get(url.split("|", 1)[0])
