"""HTTP surface of the CDS Hooks service, mounted by `interop.app.create_app`:

| route                                 | needs                                                   |
|---------------------------------------|---------------------------------------------------------|
| GET /cds-services                     | nothing (discovery: service ids and prefetch templates) |
| POST /cds-services/{id}               | a JWT signed by a registered CDS client, aud = the URL   |
| POST /cds-services/{id}/feedback      | the same; only cards issued to that client               |

What a call may read: with `fhirAuthorization` for this server, exactly what that access
token may read (its scopes, its patient); without it, the registered client's scope, confined
to the hook's patient for `patient/` scopes. Prefetched data the client sends is used as is;
what it leaves out is read from the store under those rules (`interop.fhir_reads` dispatch,
never HTTP to ourselves). With INTEROP_AUTH=off no JWT is asked for (development only).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cds_hooks import feedback
from cds_hooks.clients import CdsClient, CdsClients
from cds_hooks.config import CdsConfig
from cds_hooks.data import HookData, bad_request
from cds_hooks.hooks import SERVICES, HookCall, patient_of
from cds_hooks.security import JwtVerifier, bearer, refused
from fhir_server import limits
from fhir_server.errors import FhirError
from fhir_server.store.audit import Actor, AuditTrail, Interaction
from fhir_server.store.repository import FhirReads, Store
from smart_auth.assertion import JwksCache
from smart_auth.policy import AccessPolicy, Grant

log = logging.getLogger("interop.cds")
Handler = Callable[[Request], Awaitable[Response]]


def _error(exc: FhirError) -> Response:
    return Response(
        orjson.dumps(exc.outcome()), exc.status, exc.headers, media_type="application/json"
    )


def guarded(handler: Handler) -> Handler:
    """Every failure a caller can cause is a clear JSON OperationOutcome, never a 500."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except FhirError as exc:
            return _error(exc)

    return run


class CdsHooks:
    def __init__(
        self,
        config: CdsConfig,
        store: Store,
        reads: FhirReads,
        policy: AccessPolicy,
        access_for: Callable[[Grant], Any],
        audit: AuditTrail | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reads = reads
        self.policy = policy
        self.access_for = access_for
        self.audit = audit
        self.clients = CdsClients(store.engine)
        cache = JwksCache(config.jwks_fetch) if config.jwks_fetch is not None else None
        self.verifier = JwtVerifier(store.engine, self.clients, cache, config.jwt_max_seconds)

    async def authenticate(self, request: Request, audiences: tuple[str, ...]) -> CdsClient | None:
        if not self.config.auth_enabled:
            return None
        token = bearer(request.headers.get("authorization"))
        client = await run_in_threadpool(self.verifier.client_of, token)
        await self.verifier.fetch_keys(client)
        await run_in_threadpool(self.verifier.verify, token, client, audiences)
        return client

    def access(self, client: CdsClient | None, body: dict[str, Any], patient: str) -> Any:
        """The access the call reads with (None: auth off, everything)."""
        if client is None:
            return None
        given = body.get("fhirAuthorization")
        server = str(body.get("fhirServer") or "").rstrip("/")
        if given is not None and server == self.config.fhir_base.rstrip("/"):
            token = given.get("access_token") if isinstance(given, dict) else None
            if not isinstance(token, str) or not token:
                raise bad_request("fhirAuthorization.access_token must be a string")
            try:
                grant = self.policy.check(["cds-services"], f"Bearer {token}")
            except FhirError:
                raise refused(
                    "fhirAuthorization.access_token is not a valid access token "
                    "of this server (expired or revoked?)"
                ) from None
            if grant is None:
                return None
            if grant.patient is not None and grant.patient != patient:
                raise FhirError(
                    403,
                    "fhirAuthorization is for another patient than context.patientId",
                    "forbidden",
                )
            return self.access_for(grant)
        # no token of ours: the client's registered scope, on the hook's patient
        who = f"cds:{client.iss}"
        return self.access_for(
            Grant(subject=who, scopes=frozenset(client.scope), client_id=who, patient=patient)
        )

    async def body(self, request: Request) -> dict[str, Any]:
        raw = await limits.read_body(dict(request.headers), request.stream())
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("the request body must be JSON") from None
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    def service(self, request: Request) -> Any:
        service = SERVICES.get(request.path_params["service"])
        if service is None:
            raise FhirError(
                404,
                f"no CDS service {request.path_params['service']!r}; GET /cds-services lists them",
                "not-found",
            )
        return service

    async def discovery(self, request: Request) -> Response:
        return JSONResponse({"services": [s.discovery() for s in SERVICES.values()]})

    async def call(self, request: Request) -> Response:
        """One hook call; with the audit trail on, it leaves an AuditEvent (refusals too)
        naming the client and the patient whose data it read."""
        seen: dict[str, Any] = {}
        try:
            response = await self._call(request, seen)
        except FhirError as exc:
            response = _error(exc)
        if self.audit is not None:
            client = seen.get("client")
            who = f"cds:{client.iss}" if client is not None else None
            address = request.client.host if request.client else None
            actor = Actor(subject=who, client_id=who, patient=seen.get("patient"), address=address)
            event = Interaction("POST", "operation", "Patient", seen.get("patient"),
                                response.status_code, actor)  # fmt: skip
            try:
                await run_in_threadpool(self.audit.record, event)
            except Exception:  # noqa: BLE001 - an audit failure must not fail the call
                log.exception("could not write the audit event")
        return response

    async def _call(self, request: Request, seen: dict[str, Any]) -> Response:
        service = self.service(request)
        client = seen["client"] = await self.authenticate(
            request, (self.config.service_url(service.id),)
        )
        body = await self.body(request)
        if body.get("hook") != service.hook:
            raise bad_request(
                f"{service.id} answers the {service.hook} hook, not {str(body.get('hook'))[:40]!r}"
            )
        if not isinstance(body.get("hookInstance"), str):
            raise bad_request("hookInstance must be a string (a UUID)")
        prefetch = body.get("prefetch") or {}
        if not isinstance(prefetch, dict):
            raise bad_request("prefetch must be an object of the declared keys")
        context = body.get("context")
        patient = seen["patient"] = patient_of(context)
        access = await run_in_threadpool(self.access, client, body, patient)
        data = HookData(prefetch, self.reads.with_access(access), self.reads.with_access(None))
        call = HookCall(service.id, service.hook, context, patient, data)  # type: ignore[arg-type]
        try:
            cards = await run_in_threadpool(service.run, self.config, call)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # the client's JSON
            log.info("malformed CDS Hooks request", exc_info=True)
            raise bad_request(
                f"the hook's context or prefetch has an element of the wrong shape "
                f"({type(exc).__name__}); send FHIR resources as the specification defines them"
            ) from None
        iss = client.iss if client else ""
        await run_in_threadpool(feedback.remember, self.store.engine, service.id, iss, call.issued)
        return JSONResponse({"cards": cards})

    async def feedback(self, request: Request) -> Response:
        service = self.service(request)
        url = self.config.service_url(service.id)
        client = await self.authenticate(request, (url, f"{url}/feedback"))
        body = await self.body(request)
        iss, name = (client.iss, client.name) if client else ("", "")
        count = await run_in_threadpool(
            feedback.record, self.store, self.store.engine, service.id, iss, name, body
        )
        return JSONResponse({"recorded": count})

    def routes(self) -> list[Route]:
        return [
            Route("/cds-services", guarded(self.discovery), methods=["GET"]),
            Route("/cds-services/{service}", guarded(self.call), methods=["POST"]),
            Route("/cds-services/{service}/feedback", guarded(self.feedback), methods=["POST"]),
        ]
