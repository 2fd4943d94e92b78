"""Access and id tokens: RS256 JWTs signed with the server's current key.

A valid access token is verified without the database: the signature is checked against the
cached keys and the decoded grant is cached until it expires. Revocation is the only shared
state, re-read at most every `REVOCATION_REFRESH` seconds: revoked ids (a token's `jti`, or a
whole grant's `family`) and removed clients, whose tokens all stop working.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Engine, delete, insert, select

from fhir_server.store.db import write_transaction
from smart_auth.config import AuthConfig
from smart_auth.keys import ALG, KeyStore
from smart_auth.models import removed_clients, revoked_tokens
from smart_auth.policy import Grant

REVOCATION_REFRESH = 2.0
CACHE_SIZE = 10_000


class TokenService:
    def __init__(self, engine: Engine, keys: KeyStore, config: AuthConfig) -> None:
        self.engine = engine
        self.keys = keys
        self.config = config
        self._cache: dict[str, Grant] = {}
        self._revoked: set[str] = set()
        self._removed: set[str] = set()
        self._revoked_at = 0.0
        self._lock = threading.Lock()

    # -- issuing ------------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        key = self.keys.signing_key()
        return jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key, [ALG])

    def access_token(
        self,
        *,
        client_id: str,
        subject: str,
        scope: str,
        lifetime: int,
        context: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": self.config.fhir_base,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        for name in ("patient", "encounter", "fhirUser", "role", "family"):
            if context and context.get(name):
                claims[name] = context[name]
        return self._sign(claims)

    def id_token(
        self, *, client_id: str, subject: str, fhir_user: str | None, nonce: str | None
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "sub": subject,
            "aud": client_id,
            "iat": now,
            "exp": now + self.config.access_token_seconds,
        }
        if fhir_user:
            claims["fhirUser"] = f"{self.config.fhir_base}/{fhir_user}"
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims)

    # -- verifying ----------------------------------------------------------------------------

    def decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a token we issued and that is still valid, else None."""
        try:
            header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            key = self.keys.verification_key(str(header.get("kid", "")))
            if key is None or header.get("alg") != ALG:
                return None
            claims = dict(jwt.decode(token, key, algorithms=[ALG]).claims)
        except (JoseError, ValueError, TypeError, AttributeError, IndexError):
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            return None
        if claims.get("iss") != self.config.issuer or claims.get("aud") != self.config.fhir_base:
            return None
        if self._ended(str(claims.get("jti", "")), str(claims.get("family", "")),
                       str(claims.get("client_id", ""))):  # fmt: skip
            return None
        return claims

    def verify(self, token: str) -> Grant | None:
        """The TokenVerifier the access policy calls on every FHIR request."""
        grant = self._cache.get(token)
        now = time.time()
        if grant is not None:
            if grant.expires > now and not self._ended(grant.jti, grant.family, grant.client_id):
                return grant
            self._cache.pop(token, None)
            return None
        claims = self.decode(token)
        if claims is None:
            return None
        fhir_user = claims.get("fhirUser")
        grant = Grant(
            subject=str(claims.get("sub", "")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            client_id=str(claims.get("client_id", "")),
            patient=claims.get("patient"),
            encounter=claims.get("encounter"),
            fhir_user=fhir_user if isinstance(fhir_user, str) else None,
            role=claims.get("role"),
            jti=str(claims.get("jti", "")),
            expires=int(claims["exp"]),
            family=str(claims.get("family", "")),
        )
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = grant
        return grant

    # -- revocation ---------------------------------------------------------------------------

    def revoke(self, jti: str, expires: int) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(revoked_tokens).where(revoked_tokens.c.expires < time.time()))
            exists = conn.execute(
                select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == jti)
            ).first()
            if not exists:
                conn.execute(insert(revoked_tokens).values(jti=jti, expires=expires))
        with self._lock:
            self._revoked.add(jti)

    def client_gone(self, client_id: str) -> None:
        """This process learns of a removal at once (`Registry.remove_client` recorded it)."""
        with self._lock:
            self._removed.add(client_id)

    def client_removed(self, client_id: str) -> bool:
        self._refresh()
        return client_id in self._removed

    def is_revoked(self, jti: str) -> bool:
        self._refresh()
        return jti in self._revoked

    def _ended(self, jti: str, family: str, client_id: str) -> bool:
        self._refresh()
        revoked = self._revoked
        return jti in revoked or (family != "" and family in revoked) or client_id in self._removed

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._revoked_at > REVOCATION_REFRESH:
            with self.engine.connect() as conn:
                fresh = {r[0] for r in conn.execute(select(revoked_tokens.c.jti))}
                gone = {r[0] for r in conn.execute(select(removed_clients.c.client_id))}
            with self._lock:
                self._revoked, self._removed = fresh, gone
                self._revoked_at = now
