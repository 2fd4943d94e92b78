"""OpenEMR's access tokens, held apart from this server's own tokens.

Two kinds, never interchanged: `api` comes from the password grant of the service user (with
`offline_access`, then refresh tokens) and opens the Standard REST API; `system` comes from
`client_credentials` with a `private_key_jwt` assertion and opens the read-only FHIR API.
A token is renewed shortly before it expires, and once more when OpenEMR answers 401.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from joserfc import jwt
from joserfc.jwk import RSAKey

from openemr_bridge.config import OpenEmrConfig
from openemr_bridge.errors import OpenEmrAuthError

Kind = Literal["api", "system"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class OpenEmrToken:
    """A token OpenEMR issued to us; only ever sent back to OpenEMR."""

    kind: Kind
    access_token: str = field(repr=False)
    expires_at: float
    lifetime: float
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""

    def fresh(self, now: float) -> bool:
        """Renew when less than a fifth of the lifetime (at most a minute) is left."""
        return now < self.expires_at - min(60.0, self.lifetime / 5)


PostForm = Callable[[str, dict[str, str]], dict[str, Any]]


class TokenCache:
    """Gets, caches and renews both kinds; `post_form` sends a form to the token endpoint."""

    def __init__(
        self, config: OpenEmrConfig, post_form: PostForm, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.post_form = post_form
        self.clock = clock
        self._tokens: dict[Kind, OpenEmrToken] = {}
        self._lock = threading.Lock()

    def get(self, kind: Kind) -> str:
        with self._lock:
            token = self._tokens.get(kind)
            if token is None or not token.fresh(self.clock()):
                token = self._renew(kind, token)
                self._tokens[kind] = token
            return token.access_token

    def invalidate(self, kind: Kind, access_token: str) -> None:
        """After a 401: forget the token (keeping its refresh token) so the next get renews."""
        with self._lock:
            token = self._tokens.get(kind)
            if token is not None and token.access_token == access_token:
                token.expires_at = 0

    def _renew(self, kind: Kind, old: OpenEmrToken | None) -> OpenEmrToken:
        if kind == "system":
            return self._issue(kind, self._client_credentials())
        if old is not None and old.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": old.refresh_token}
            try:
                return self._issue(kind, form | self._client_auth())
            except OpenEmrAuthError:
                pass  # refresh token expired or revoked: fall back to the password grant
        return self._issue(kind, self._password())

    def _issue(self, kind: Kind, form: dict[str, str]) -> OpenEmrToken:
        body = self.post_form(self.config.token_url, form)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OpenEmrAuthError(
                f"POST /oauth2/{self.config.site}/token", 200, "no access_token in the answer"
            )
        lifetime = float(body.get("expires_in") or 300)
        return OpenEmrToken(
            kind,
            access,
            self.clock() + lifetime,
            lifetime,
            body.get("refresh_token"),
            str(body.get("scope") or ""),
        )

    def _client_auth(self) -> dict[str, str]:
        form = {"client_id": self.config.client_id}
        if self.config.client_secret:
            form["client_secret"] = self.config.client_secret
        return form

    def _password(self) -> dict[str, str]:
        if not self.config.username or not self.config.password:
            raise OpenEmrAuthError(
                f"POST /oauth2/{self.config.site}/token",
                None,
                "no service user configured (INTEROP_OPENEMR_USERNAME / _PASSWORD)",
            )
        return {
            "grant_type": "password",
            "user_role": "users",
            "username": self.config.username,
            "password": self.config.password,
            "scope": self.config.api_scope,
        } | self._client_auth()

    def _client_credentials(self) -> dict[str, str]:
        if not self.config.private_key:
            raise OpenEmrAuthError(
                f"POST /oauth2/{self.config.site}/token",
                None,
                "no private key configured for client_credentials (INTEROP_OPENEMR_PRIVATE_KEY)",
            )
        return {
            "grant_type": "client_credentials",
            "scope": self.config.system_scope,
            "client_id": self.config.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(
                Path(self.config.private_key).read_bytes(),
                self.config.client_id,
                self.config.token_url,
                self.clock(),
            ),
        }


def client_assertion(pem: bytes, client_id: str, audience: str, now: float) -> str:
    """An RS384 JWT that proves we hold the key registered with our client in OpenEMR."""
    key = RSAKey.import_key(pem)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": uuid.uuid4().hex,
        "iat": int(now),
        "exp": int(now) + 300,
    }
    header = {"alg": "RS384", "typ": "JWT", "kid": key.thumbprint()}
    return jwt.encode(header, claims, key, algorithms=["RS384"])
