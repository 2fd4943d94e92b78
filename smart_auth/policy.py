"""The access policy every FHIR interaction and every side surface passes through.

With `INTEROP_AUTH=on` (the default) a request needs a bearer token that a registered verifier
accepts; the SMART authorization server registers its verifier at start-up. With no verifier,
nothing but the public endpoints (`metadata`, discovery) is reachable: secure by default.

A surface outside the FHIR API (the HL7 inbox, ...) names what it needs as a `Surface`: a user
role (the user's token must carry a `user/` scope with the permission letter, so an app the
user launched for one patient does not inherit it) or a `system/` scope that only an operator
can grant. `AccessPolicy.require` is the one check for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_server.errors import FhirError
from smart_auth.scopes import parse_resource_scope

PUBLIC_PATHS = frozenset({"metadata", ".well-known"})


@dataclass(frozen=True, slots=True)
class Grant:
    """Who is calling and what they may do; produced by a token verifier."""

    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    client_id: str = ""
    patient: str | None = None  # the launch patient: `patient/` scopes are confined to it
    encounter: str | None = None
    fhir_user: str | None = None
    role: str | None = None  # caps `user/` scopes (smart_auth.roles)
    jti: str = ""
    expires: int = 0
    family: str = ""  # the authorization grant (code and its refreshes) the token came from


TokenVerifier = Callable[[str], Grant | None]

OPERATOR_ROLES = frozenset({"admin", "operator"})


@dataclass(frozen=True, slots=True)
class Surface:
    """A non-FHIR surface and who may use it: `roles` (with a `user/` scope granting `perm`)
    or a token holding `system_scope` exactly (`system/` scopes are granted by operators)."""

    name: str
    perm: str  # "r" to read, "c" to submit or change
    system_scope: str
    roles: frozenset[str] = OPERATOR_ROLES

    def allows(self, grant: Grant) -> bool:
        if self.system_scope and self.system_scope in grant.scopes:
            return True
        if grant.role not in self.roles:
            return False
        return any(_user_scope_grants(s, self.perm) for s in grant.scopes)

    def refusal(self, grant: Grant) -> FhirError:
        return FhirError(
            403,
            f"{self.name} needs a user with role {' or '.join(sorted(self.roles))} "
            f"(and a user/ scope granting '{self.perm}') or the scope {self.system_scope} "
            f"(scopes: {' '.join(sorted(grant.scopes)) or 'none'}, role: {grant.role or 'none'})",
            "forbidden",
        )


def _user_scope_grants(scope: str, perm: str) -> bool:
    parsed = parse_resource_scope(scope)
    return parsed is not None and parsed.context == "user" and perm in parsed.perms


# The operator console (/console) signs people in with a session of its own: its surfaces are
# opened by a console session's grant only (a role, never a token's scope: `system_scope` is
# empty, which no token holds), so no SMART access token opens anything there.
CONSOLE = Surface("The operator console", "r", "", OPERATOR_ROLES)
CONSOLE_ADMIN = Surface("Console administration", "r", "", frozenset({"admin"}))


class AccessPolicy:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.verifiers: list[TokenVerifier] = []

    def check(self, path: list[str], authorization: str | None) -> Grant | None:
        """Return the caller's grant, or raise 401 with a WWW-Authenticate challenge."""
        if not self.enabled or (path and path[0] in PUBLIC_PATHS):
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                "This FHIR server needs an OAuth2 bearer token (Authorization: Bearer ...)"
            )
        for verify in self.verifiers:
            grant = verify(token.strip())
            if grant is not None:
                return grant
        raise _unauthorized(
            "The bearer token is not valid, expired or was revoked", error="invalid_token"
        )

    def require(self, surface: Surface, authorization: str | None) -> Grant | None:
        """The caller's grant when it may use `surface`: 401 without a valid token, 403 when
        the token lacks the role or scope (None with auth off)."""
        grant = self.check([surface.name], authorization)
        if grant is not None and not surface.allows(grant):
            raise surface.refusal(grant)
        return grant


def _unauthorized(text: str, error: str | None = None) -> FhirError:
    challenge = 'Bearer realm="fhir"' + (f', error="{error}"' if error else "")
    return FhirError(401, text, "login", headers={"WWW-Authenticate": challenge})
