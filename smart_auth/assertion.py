"""`private_key_jwt` client authentication (SMART Backend Services, RFC 7523).

The client signs a short-lived JWT with its own key (RS384 or ES384); we check it against the
JWKS the client registered, or fetched from its JWKS URL (cached as long as the URL's
Cache-Control allows). `jti` values are remembered until the assertion expires, so a replayed
assertion is refused.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.request
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from fhir_server.store.db import write_transaction
from smart_auth.errors import OAuthError, invalid_client
from smart_auth.models import used_jti
from smart_auth.registry import Client, Registry, RegistryError, check_jwks

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME = 300
LEEWAY = 30
DEFAULT_JWKS_CACHE = 300
_MAX_AGE = re.compile(r"max-age=(\d+)")


class JwksCache:
    """JWKS documents fetched from client URLs, kept as long as their Cache-Control says."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get(url)
        if hit and hit[0] > now:
            return hit[1]
        if not url.startswith(("https://", "http://")):
            raise ValueError("a JWKS URL must be http(s)")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - registered URL
            body = json.loads(response.read(1_000_000))
            cache_control = response.headers.get("Cache-Control", "")
        ttl = DEFAULT_JWKS_CACHE
        if "no-store" in cache_control or "no-cache" in cache_control:
            ttl = 0
        elif match := _MAX_AGE.search(cache_control):
            ttl = min(int(match.group(1)), 86400)
        with self._lock:
            self._cache[url] = (now + ttl, body)
        return body


class AssertionVerifier:
    def __init__(self, engine: Engine, registry: Registry, token_url: str) -> None:
        self.engine = engine
        self.registry = registry
        self.token_url = token_url
        self.jwks_cache = JwksCache()

    def authenticate(self, assertion: str, client_id: str | None) -> Client:
        """The client the assertion proves, or `invalid_client`."""
        try:
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
            unverified = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
        except (ValueError, IndexError, UnicodeDecodeError):
            raise invalid_client() from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise invalid_client()
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OAuthError(
                "invalid_client", f"Assertions must be signed with {' or '.join(ALGORITHMS)}", 401
            )
        claimed = client_id or unverified.get("iss")
        client = self.registry.client(claimed) if isinstance(claimed, str) else None
        if client is None or client.client_type != "confidential-jwks":
            raise invalid_client()
        key_set = self._keys(client, header.get("kid"))
        try:
            claims = jwt.decode(assertion, key_set, algorithms=[alg]).claims
        except (JoseError, ValueError, TypeError):
            raise invalid_client() from None
        now = time.time()
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        exp = claims.get("exp")
        jti = claims.get("jti")
        if (
            claims.get("iss") != client.client_id
            or claims.get("sub") != client.client_id
            or self.token_url not in audiences
            or not isinstance(exp, int | float)
            or exp <= now
            or exp > now + MAX_LIFETIME + LEEWAY
            or not isinstance(jti, str)
            or not jti
        ):
            raise invalid_client()
        self._remember_jti(client.client_id, jti, int(exp))
        return client

    def _keys(self, client: Client, kid: Any) -> KeySet:
        try:
            jwks = client.jwks or self.jwks_cache.get(client.jwks_url or "")
            check_jwks(jwks)
        except (OSError, ValueError, RegistryError):
            raise invalid_client() from None
        keys = [k for k in jwks["keys"] if kid is None or k.get("kid") == kid]
        if not keys:
            raise invalid_client()
        try:
            return KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError, KeyError):
            raise invalid_client() from None

    def _remember_jti(self, client_id: str, jti: str, expires: int) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(used_jti).where(used_jti.c.expires < time.time() - LEEWAY))
            seen = conn.execute(
                select(used_jti.c.jti).where(
                    used_jti.c.client_id == client_id, used_jti.c.jti == jti[:256]
                )
            ).first()
            if seen:
                raise OAuthError("invalid_client", "This assertion (jti) was already used", 401)
            try:
                conn.execute(
                    insert(used_jti).values(client_id=client_id, jti=jti[:256], expires=expires)
                )
            except IntegrityError:  # the same jti, concurrently
                raise OAuthError(
                    "invalid_client", "This assertion (jti) was already used", 401
                ) from None
