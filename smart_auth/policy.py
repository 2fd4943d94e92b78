"""The access policy every FHIR interaction passes through.

With `INTEROP_AUTH=on` (the default) a request needs a bearer token that a registered verifier
accepts; the SMART authorization server registers its verifier at start-up. With no verifier,
nothing but the public endpoints (`metadata`, discovery) is reachable: secure by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_server.errors import FhirError

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


TokenVerifier = Callable[[str], Grant | None]


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


def _unauthorized(text: str, error: str | None = None) -> FhirError:
    challenge = 'Bearer realm="fhir"' + (f', error="{error}"' if error else "")
    return FhirError(401, text, "login", headers={"WWW-Authenticate": challenge})
