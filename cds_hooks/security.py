"""CDS Hooks security: the client's signed JWT (CDS Hooks 2.0, "Trusting CDS Clients").

Every call carries `Authorization: Bearer <JWT>` signed (ES384 or RS384) by the CDS client
with a key an operator registered for its `iss` (inline JWKS, or a JWKS URL fetched through the
guarded outbound client, never from a `jku` the token names unless it is the registered URL).
`aud` must be the service's own URL as discovery publishes it, `exp` near, and each `jti` is
remembered until the JWT expires, so a captured JWT cannot be replayed.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from cds_hooks.clients import CdsClient, CdsClients
from cds_hooks.models import cds_used_jti
from fhir_server.errors import FhirError
from fhir_server.store.db import write_transaction
from smart_auth.assertion import JwksCache, JwksUnavailable
from smart_auth.registry import RegistryError, check_jwks

ALGORITHMS = ("ES384", "RS384")
LEEWAY = 30


def refused(text: str) -> FhirError:
    challenge = 'Bearer realm="cds-hooks", error="invalid_token"'
    return FhirError(401, text, "login", headers={"WWW-Authenticate": challenge})


def unverified(token: str, part: int) -> dict[str, Any]:
    """The header (0) or claims (1) of a JWT, unverified; {} when unreadable."""
    try:
        value = json.loads(base64.urlsafe_b64decode(token.split(".")[part] + "=="))
    except (ValueError, IndexError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise refused("A CDS client signs each call: Authorization: Bearer <JWT> (CDS Hooks 2.0)")
    return token.strip()


class JwtVerifier:
    def __init__(
        self, engine: Engine, clients: CdsClients, jwks_cache: JwksCache | None, max_seconds: int
    ) -> None:
        self.engine = engine
        self.clients = clients
        self.jwks_cache = jwks_cache
        self.max_seconds = max_seconds

    def client_of(self, token: str) -> CdsClient:
        iss = unverified(token, 1).get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) and iss else None
        if client is None:
            raise refused("The JWT's iss is not a registered CDS client (interop cds clients add)")
        return client

    async def fetch_keys(self, client: CdsClient) -> None:
        """A JWKS URL is fetched on the event loop, through the outbound client, before the
        verification runs in a thread (which then reads it from the cache)."""
        if client.jwks is None and client.jwks_url and self.jwks_cache is not None:
            try:
                await self.jwks_cache.fetch(client.jwks_url)
            except JwksUnavailable as exc:
                raise refused(f"The client's JWKS could not be fetched: {exc}") from None

    def verify(self, token: str, client: CdsClient, audiences: tuple[str, ...]) -> dict[str, Any]:
        """The JWT's claims once signature, `iss`, `aud`, `exp` and `jti` hold; the jti is
        then used up. Raises a 401 FhirError saying which check failed."""
        header = unverified(token, 0)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise refused(f"The JWT must be signed with {' or '.join(ALGORITHMS)}")
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_url:
            raise refused("The JWT's jku is not the JWKS URL registered for this client")
        try:
            claims = jwt.decode(token, self._keys(client, kid), algorithms=[alg]).claims
        except (JoseError, ValueError, TypeError):
            raise refused("The JWT's signature does not verify with the client's keys") from None
        now = time.time()
        aud = claims.get("aud")
        if not any(a in audiences for a in (aud if isinstance(aud, list) else [aud])):
            raise refused(f"The JWT's aud must be this service's URL, {audiences[0]}")
        if claims.get("iss") != client.iss:
            raise refused("The JWT's iss does not match the client")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now - LEEWAY:
            raise refused("The JWT has expired (or carries no exp)")
        if exp > now + self.max_seconds + LEEWAY:
            raise refused(f"The JWT lives too long: exp is at most {self.max_seconds}s ahead")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise refused("The JWT needs a jti (a unique id, at most 256 characters)")
        self._use_jti(client.iss, jti, int(exp))
        return dict(claims)

    def _keys(self, client: CdsClient, kid: Any) -> KeySet:
        if not isinstance(kid, str) or not kid:
            raise refused("The JWT header needs the kid of the signing key")
        jwks = client.jwks
        if jwks is None and client.jwks_url and self.jwks_cache is not None:
            try:
                jwks = self.jwks_cache.cached(client.jwks_url)
            except JwksUnavailable as exc:
                raise refused(f"The client's JWKS could not be fetched: {exc}") from None
        try:
            check_jwks(jwks)
        except RegistryError:
            raise refused("No usable keys are registered for this client") from None
        assert jwks is not None
        keys = [k for k in jwks["keys"] if k.get("kid") == kid]
        if not keys:
            raise refused(f"No key with kid {kid!r} is registered for this client")
        try:
            return KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError, KeyError):
            raise refused("The registered key could not be read") from None

    def _use_jti(self, iss: str, jti: str, expires: int) -> None:
        replayed = refused("This JWT (jti) was already used; sign a new one for each call")
        with write_transaction(self.engine) as conn:
            conn.execute(delete(cds_used_jti).where(cds_used_jti.c.expires < time.time() - LEEWAY))
            seen = conn.execute(
                select(cds_used_jti.c.jti).where(
                    cds_used_jti.c.iss == iss, cds_used_jti.c.jti == jti
                )
            ).first()
            if seen:
                raise replayed
            try:
                conn.execute(insert(cds_used_jti).values(iss=iss, jti=jti, expires=expires))
            except IntegrityError:  # the same jti, concurrently
                raise replayed from None
