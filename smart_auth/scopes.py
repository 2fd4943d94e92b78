"""SMART scopes, v1 (`patient/Observation.read`) and v2 (`user/*.cruds?category=...`).

A resource scope becomes a `ResourceScope`: context (patient, user, system), resource type
(or `*`), the set of permissions out of c/r/u/d/s, and optional query restrictions. v1 `read`
means r+s, `write` c+u+d, `*` everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

PERMISSIONS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")
CONTEXTS = ("patient", "user", "system")


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: str
    res_type: str
    perms: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()
    v1: bool = False

    def covers(self, other: ResourceScope) -> bool:
        """True when every access `other` grants is also granted by this scope."""
        return (
            self.context == other.context
            and self.res_type in ("*", other.res_type)
            and other.perms <= self.perms
            and (not self.query or set(self.query) <= set(other.query))
        )


def parse_resource_scope(scope: str) -> ResourceScope | None:
    """The parsed scope, or None for anything else (openid, launch, malformed strings)."""
    match = _RE.match(scope)
    if not match:
        return None
    context, res_type, perms, query = match.groups()
    if perms in V1:
        granted, v1 = V1[perms], True
    else:
        # v2 letters must come in c-r-u-d-s order, each at most once
        if not perms or any(p not in PERMISSIONS for p in perms):
            return None
        if "".join(sorted(perms, key=PERMISSIONS.index)) != perms or len(set(perms)) != len(perms):
            return None
        granted, v1 = perms, False
    pairs = tuple(parse_qsl(query, keep_blank_values=False)) if query else ()
    return ResourceScope(context, res_type, frozenset(granted), pairs, v1)


def split(scope: str | None) -> list[str]:
    """A space-separated scope string as an ordered list without duplicates."""
    return list(dict.fromkeys((scope or "").split()))


def allowed_by(requested: str, allowed: list[str]) -> bool:
    """Whether a client registered for `allowed` may ask for `requested`."""
    if requested in allowed:
        return True
    asked = parse_resource_scope(requested)
    if asked is None:
        return False
    return any(
        (held := parse_resource_scope(a)) is not None and held.covers(asked) for a in allowed
    )


def narrow(requested: list[str], allowed: list[str]) -> list[str]:
    """The requested scopes a registration permits; anything else is silently dropped."""
    return [s for s in requested if allowed_by(s, allowed)]
