"""`private_key_jwt` client authentication (SMART Backend Services, RFC 7523).

The client signs a short-lived JWT with its own key (RS384 or ES384); we check it against the
JWKS the client registered, or fetched from its JWKS URL (cached as long as the URL's
Cache-Control allows). `jti` values are remembered until the assertion expires, so a replayed
assertion is refused.

A JWKS URL is the client's choice, so it is fetched through the outbound client (allow-list,
address rules, deadline, size cap) and asynchronously, before the token endpoint's work goes
to a thread: a peer answering one byte per second costs its own request a few seconds and
holds no request thread. One fetch per URL at a time, failures remembered briefly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

import outbound
from fhir_server.store.db import write_transaction
from smart_auth.errors import OAuthError, invalid_client
from smart_auth.models import used_jti
from smart_auth.registry import Client, Registry, RegistryError, check_jwks

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME = 300
LEEWAY = 30
DEFAULT_JWKS_CACHE = 300
MIN_JWKS_CACHE = 10  # even a no-store JWKS serves the request that fetched it
FAILURE_CACHE = 30  # seconds a failed JWKS fetch is answered from memory
MAX_FETCHES = 16  # JWKS fetches in flight at once; more callers are refused at once
MAX_ENTRIES = 2048
_MAX_AGE = re.compile(r"max-age=(\d+)")


class JwksUnavailable(ValueError):
    pass


class JwksCache:
    """JWKS documents fetched from client URLs, kept as long as their Cache-Control says."""

    def __init__(self, policy: outbound.Policy) -> None:
        self.policy = policy
        # url -> (expires, document or None after a failure, why it failed)
        self._cache: dict[str, tuple[float, dict[str, Any] | None, str]] = {}
        self._lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def cached(self, url: str) -> dict[str, Any] | None:
        """The cached document; `JwksUnavailable` while a recent failure is remembered."""
        hit = self._cache.get(url)
        if hit is None or hit[0] <= time.monotonic():
            return None
        if hit[1] is None:
            raise JwksUnavailable(hit[2])
        return hit[1]

    async def fetch(self, url: str) -> dict[str, Any]:
        """From the cache, or fetched on the event loop; concurrent callers share one fetch."""
        hit = self.cached(url)
        if hit is not None:
            return hit
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(url)
        if pending is None or pending.get_loop() is not loop:
            if len(self._inflight) >= MAX_FETCHES:
                raise JwksUnavailable("too many JWKS fetches in flight; try again shortly")
            pending = loop.create_task(self._fetch(url))
            self._inflight[url] = pending
            pending.add_done_callback(lambda task: self._done(url, task))
        return await asyncio.shield(pending)

    def _done(self, url: str, task: asyncio.Future[dict[str, Any]]) -> None:
        self._inflight.pop(url, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure every waiter left is not "never retrieved"

    async def _fetch(self, url: str) -> dict[str, Any]:
        try:
            self.policy.check_url(url)
            async with outbound.AsyncClient(self.policy) as http:
                response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise self._failed(url, exc) from None
        return self._keep(url, response)

    def _keep(self, url: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise self._failed(url, f"HTTP {response.status_code}")
        try:
            body = json.loads(response.content)
        except ValueError:
            raise self._failed(url, "not JSON") from None
        if not isinstance(body, dict):
            raise self._failed(url, "not a JSON object")
        cache_control = response.headers.get("Cache-Control", "")
        ttl = DEFAULT_JWKS_CACHE
        if "no-store" in cache_control or "no-cache" in cache_control:
            ttl = 0
        elif match := _MAX_AGE.search(cache_control):
            ttl = min(int(match.group(1)), 86400)
        # kept at least MIN_JWKS_CACHE: the request that fetched it reads it from here
        self._store(url, (time.monotonic() + max(ttl, MIN_JWKS_CACHE), body, ""))
        return body

    def _failed(self, url: str, why: object) -> JwksUnavailable:
        reason = f"{type(why).__name__}: {why}" if isinstance(why, Exception) else str(why)
        self._store(url, (time.monotonic() + FAILURE_CACHE, None, reason))
        return JwksUnavailable(reason)

    def _store(self, url: str, entry: tuple[float, dict[str, Any] | None, str]) -> None:
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                now = time.monotonic()
                for key in [k for k, v in self._cache.items() if v[0] <= now] or [
                    next(iter(self._cache))
                ]:
                    self._cache.pop(key, None)
            self._cache[url] = entry


class AssertionVerifier:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        token_url: str,
        jwks_policy: outbound.Policy,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.token_url = token_url
        self.jwks_cache = JwksCache(jwks_policy)

    async def prefetch(self, form: Mapping[str, str]) -> None:
        """Fetch the JWKS a `client_assertion` in `form` needs, on the event loop and within
        the deadline, so `authenticate` (run in a thread) finds it cached and never waits on
        the network. A failure is remembered; `authenticate` then answers invalid_client."""
        assertion = form.get("client_assertion") or ""
        claimed = form.get("client_id") or _unverified(assertion, 1).get("iss")
        if not assertion or not isinstance(claimed, str) or not claimed:
            return
        client = await run_in_threadpool(self.registry.client, claimed)
        if client is None or client.jwks or not client.jwks_url:
            return
        with contextlib.suppress(ValueError):
            await self.jwks_cache.fetch(client.jwks_url)

    def authenticate(self, assertion: str, client_id: str | None) -> Client:
        """The client the assertion proves, or `invalid_client`."""
        header, unverified = _unverified(assertion, 0), _unverified(assertion, 1)
        if not header or not unverified:
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
            # fetched by `prefetch` on the event loop; a request thread never waits on a peer
            jwks = client.jwks or self.jwks_cache.cached(client.jwks_url or "")
            if jwks is None:
                raise invalid_client()
            check_jwks(jwks)
        except (ValueError, RegistryError):
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


def _unverified(assertion: str, part: int) -> dict[str, Any]:
    """The header (0) or claims (1) of a JWT, unverified; {} when unreadable."""
    try:
        value = json.loads(base64.urlsafe_b64decode(assertion.split(".")[part] + "=="))
    except (ValueError, IndexError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
