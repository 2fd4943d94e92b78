"""ASGI app assembly: the FHIR API under /fhir, health and metrics at the root."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
from fastapi import FastAPI
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from console.web import ConsoleDeps
from console.web import routes as console_routes
from fhir_server import limits, metrics
from fhir_server.api import compartment
from fhir_server.api import terminology as terminology_operations
from fhir_server.api import validate as validate_operation
from fhir_server.api.capability import capability_bytes
from fhir_server.api.context import FHIR_JSON, Fetched, FhirRequest, FhirResponse
from fhir_server.api.router import dispatch, failure, inline, planned_search
from fhir_server.bulk import operations as bulk_operations
from fhir_server.bulk.service import BulkService
from fhir_server.clock import mostly_waited
from fhir_server.errors import FhirError
from fhir_server.search.query import direct_result
from fhir_server.store.audit import (
    AuditTrail,
    Interaction,
    guess_interaction,
    may_read_audit_events,
)
from fhir_server.store.db import schema_is_current
from fhir_server.store.repository import Transaction
from fhir_server.subscriptions.delivery import Deliverer
from fhir_server.subscriptions.service import SubscriptionService
from fhir_server.subscriptions.websocket import Hub, websocket_route
from hl7_listener.http import routes as hl7_routes
from interop import features, pages
from interop.fhir_reads import ApiReads
from interop.logs import request_id_var
from interop.metrics import DatabaseCollector, metrics_refusal
from interop.outbox_runner import OutboxRunner
from interop.request_threads import RequestThreads
from interop.runtime import Runtime, request_limits
from interop.services import Loop, Managed, Singleton
from interop.settings import Settings, get_settings
from smart_auth.agent import actor_for
from smart_auth.policy import AccessPolicy, Grant
from smart_auth.setup import install

log = logging.getLogger("interop.http")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def software_version() -> str:
    try:
        return version("interop-server")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: Settings | None = None,
    migrate: bool = True,
    channels: bool = False,
    runtime: Runtime | None = None,
) -> FastAPI:
    """The ASGI app on `runtime` (built from `settings` when not given). `channels`: also run
    the once-per-server channels (MLLP listener, imaging and OpenEMR sync) as its services
    (`interop serve` with one worker)."""
    runtime = runtime or Runtime(settings, migrate)
    settings = runtime.settings
    base_url = runtime.base_url
    limits.configure(request_limits(settings))
    engine, store, services = runtime.engine, runtime.store, runtime.services
    store.statistics.refresh_in_background()
    bulk = BulkService.embedded(store, runtime.bulk_config(), base_url, settings.auth_enabled)
    if settings.redis_url:  # jobs go to `interop worker`; this process only sweeps
        from interop import bulk_worker

        bulk.submitter = bulk_worker.Submitter(runtime.ai_config())
    ctx = runtime.ctx
    compartment.register(ctx.operations)  # $everything
    validate_operation.register(ctx.operations)  # $validate on every type
    terminology_operations.register(ctx.operations, runtime.terminology)  # $expand, ...
    bulk_operations.register(ctx.operations, bulk)  # $export, $import and their URLs
    ai = _ai_runtime(runtime, ctx)
    policy = AccessPolicy(settings.auth_enabled)
    # every change the store commits, from any channel, gets its AuditEvent
    audit = store.audit if isinstance(store.audit, AuditTrail) else None  # the runtime's trail
    lease = settings.lease_seconds  # singletons' leadership and claimed work (store.work)
    leases = runtime.leases
    outbox_runner = OutboxRunner(engine, lease)  # consumers register on app.state.outbox_runner
    store.change_listeners.append(outbox_runner.wake)
    imaging = runtime.imaging_bridge()
    if ai is not None:
        outbox_runner.register("ai-trigger", ai.handle, types=ai.TYPES)
    subscriptions = SubscriptionService(store, base_url, runtime.subscription_config())
    ctx.operations.hook("Subscription", subscriptions)  # vets and owns Subscription writes
    outbox_runner.register("subscriptions", subscriptions.handle, subscriptions.watched_types)
    hub = Hub()
    deliverer = Deliverer(subscriptions, hub, lease)
    relay = None
    if settings.redis_url:  # consumers and deliveries run on `interop worker` (Celery)
        from ai_worker.celery_app import make_celery
        from interop.outbox_relay import Relay, sweep_deliveries

        relay = Relay(make_celery(runtime.ai_config()))
        subscriptions.wake = relay.deliver_soon
    # started in this order when the app starts, stopped in reverse (interop.services)
    if audit is not None:
        services.add(Managed("audit-trail", lambda: None, audit.close))
    if settings.background:
        if ai is not None:
            services.add(Managed("ai-runner", ai.start, ai.stop))
            services.add(Singleton(Loop("ai-sweeper", ai.sweep, ai.sweep_seconds), leases, lease))
        services.add(Managed("outbox-runner", outbox_runner.start, outbox_runner.stop,
                             outbox_runner.health))  # fmt: skip
        services.add(Managed("bulk-jobs", bulk.start, bulk.close))
        sweep_bulk = Loop("bulk-sweeper", lambda: bulk.sweep(lease), min(30.0, lease))
        services.add(Singleton(sweep_bulk, leases, lease))
        if relay is None:
            services.add(Managed("subscription-delivery", deliverer.start, deliverer.stop))
        else:  # workers deliver; one process asks them when retries fall due
            sweep = Loop("subscription-sweep", lambda: sweep_deliveries(relay, deliverer), 1.0)
            services.add(Singleton(sweep, leases, lease))
    else:  # a pure API replica: jobs it accepts wait in their tables for the sweepers
        if bulk.submitter is None:
            bulk.runner = None
        if ai is not None and ai.runner is not None:
            ai.runner, ai.service.submitter = None, None

    threads = RequestThreads(settings.db_pool_size)  # FHIR interactions run there

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # As many request threads as pooled connections: more threads only queue for a
        # connection, and pool overflow would open (and close) a connection per request.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        if channels:
            runtime.add_channel_services(background=settings.background)
        services.start()
        # What start-up loaded (definitions, compiled checkers, modules) lives as long as the
        # process: out of the cyclic collector's sight, which otherwise walks all of it again
        # and again while requests allocate (~25% of a Synthea Bundle's CPU time here).
        gc.collect()
        gc.freeze()
        yield
        await run_in_threadpool(threads.close)  # the interactions under way finish first
        if awaited is not None:
            await awaited.close()
        await run_in_threadpool(runtime.close)  # the services in reverse, then the engine

    docs = settings.docs == "on"  # the API description is for developers, off by default
    app = FastAPI(
        title="Interop server",
        version=software_version(),
        docs_url=None,  # interop.pages serves /docs and /openapi.json (from the capability)
        openapi_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    auth_server, access_for, security = install(app, engine, runtime.auth_config(), policy)
    if settings.auth_enabled:
        subscriptions.access_from = lambda grant: access_for(grant_from(grant))

    def websocket_requester(authorization: str | None) -> str | None:
        grant = policy.check(["websocket"], authorization)
        return None if grant is None else (grant.client_id or grant.subject)

    app.router.routes.insert(0, websocket_route(subscriptions, hub, websocket_requester))
    capability = ctx.operations.advertise(
        capability_bytes(base_url, software_version(), settings.auth_enabled, security)
    )
    ctx.capability = lambda: capability
    pages.install(app, capability, base_url, docs)  # `/`, and /docs + /openapi.json when on
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.services = services
    app.state.store = store
    app.state.policy = policy
    app.state.context = ctx
    app.state.fhir_reads = ApiReads(ctx)  # the channels' FHIR reads (interop.fhir_reads)
    app.state.bulk = bulk
    app.state.subscriptions = subscriptions
    app.state.ai = ai
    app.state.audit = audit
    app.state.outbox_runner = outbox_runner
    app.state.deliverer = deliverer
    app.state.access_for = access_for
    app.state.imaging = imaging
    if not settings.auth_enabled:
        logging.getLogger("interop").warning(
            "INTEROP_AUTH=off: the FHIR API accepts requests without a token (development only)"
        )

    from openemr_bridge.refresh import ReadThrough
    from openemr_bridge.routes import build_syncer

    openemr = runtime.openemr_settings()
    syncer = build_syncer(openemr, ctx)
    read_through = (
        ReadThrough(syncer, settings.openemr_refresh_age)
        if syncer is not None and settings.openemr_refresh_age > 0
        else None
    )

    inline_reads = InlineReads(engine.dialect.name == "sqlite" and read_through is None)
    # PostgreSQL: a read by id awaits its row on the event loop (fhir_server.store.async_reads)
    # over half as many connections again as the threads' pool; the threads keep theirs
    awaited = None
    if engine.dialect.name == "postgresql" and read_through is None:
        from fhir_server.store.async_reads import AsyncReads

        awaited = AsyncReads(
            engine, max(2, settings.db_pool_size // 2), settings.db_statement_timeout_ms
        )
    counted: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # metric children per labels

    async def fhir_endpoint(request: Request) -> Response:
        started = time.perf_counter()
        path = request.path_params.get("path", "").split("/")
        query = request.scope["query_string"]  # parsed as Starlette's QueryParams does
        fhir_req = FhirRequest(
            request.method,
            path,
            parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else [],
            dict(request.headers),
        )
        interaction, res_type = "unknown", ""
        grant = None
        stream, media_type = None, FHIR_JSON
        audited: list[bool] = []  # a change recorded (by the store) inside its transaction
        try:
            await _read_body(request, fhir_req)
            _negotiate(fhir_req)
            grant = policy.check([p for p in path if p], fhir_req.header("authorization"))
            request_ctx = ctx if grant is None else replace(ctx, access=access_for(grant))
            if audit is not None and may_read_audit_events(
                request.method, [p for p in path if p], query.decode("latin-1"), fhir_req.body
            ):  # read events are kept compact until something can read them
                await run_in_threadpool(audit.expand)
            if read_through is not None and request.method == "GET" and len(path) == 2:
                await run_in_threadpool(read_through.before_read, path[0], path[1])
            if audit is not None and request.method not in ("GET", "HEAD"):

                def record_change(tx: Transaction) -> None:
                    audited.append(True)  # the store wrote the change's AuditEvent

                address = request.client.host if request.client else None
                request_ctx = replace(
                    request_ctx, actor=actor_for(grant, address), before_commit=record_change
                )
            if inline_reads.wanted(started) and _reads_by_id(request.method, path, ctx):
                begun, cpu = time.perf_counter(), time.process_time()  # SQLite: no hop
                response: FhirResponse = dispatch(request_ctx, fhir_req)
                inline_reads.took(begun, time.perf_counter(), cpu)
            elif (
                awaited is not None
                and awaited.wanted(started)
                and _reads_by_id(request.method, path, ctx)
                and _unjudged(request_ctx, [p for p in path if p][0])
            ):  # a read by id on PostgreSQL: the row awaited here, no thread hop
                res_type, res_id = [p for p in path if p]
                row = await awaited.read(res_type, res_id)
                fetched = Fetched(key=(res_type, res_id), row=row)
                response = dispatch(replace(request_ctx, fetched=fetched), fhir_req)
            elif (
                awaited is not None
                and awaited.wanted(started)
                and (plan := planned_search(request_ctx, fhir_req))
            ):
                # a search on PostgreSQL, planned here: a direct one's page awaited here too
                page = None
                if plan.direct is not None and not plan.where:
                    rows = await awaited.rows(plan.direct.sql, plan.direct.params)
                    page = direct_result(plan, rows)
                fetched = Fetched(request=fhir_req, plan=plan, page=page)
                searching = replace(request_ctx, fetched=fetched)
                if page is not None:
                    response = dispatch(searching, fhir_req)
                else:  # the general path: SQLAlchemy, in a thread
                    response = await threads.run(dispatch, searching, fhir_req)
            elif inline(request_ctx, fhir_req):  # a lookup answered from memory
                response = dispatch(request_ctx, fhir_req)
            else:
                response = await threads.run(dispatch, request_ctx, fhir_req)
            interaction, res_type = response.interaction or interaction, response.res_type
            status, body, headers = response.status, response.body, response.headers
            stream, media_type = response.stream, response.media_type or FHIR_JSON
        except Exception as exc:  # noqa: BLE001 - `failure` decides what the client sees
            error = failure(exc)
            status, body, headers = error.status, orjson.dumps(error.outcome()), error.headers
        finally:
            if fhir_req.body_file is not None:
                fhir_req.body_file.close()
        request.state.interaction = interaction
        if (
            audit is not None
            and not (audited and status < 400)
            and interaction != "capabilities"
            and path[:1] != [".well-known"]
        ):
            parts = [p for p in path if p]
            event = Interaction(
                request.method,
                interaction
                if interaction != "unknown"
                else guess_interaction(request.method, parts),
                res_type or (parts[0] if parts else ""),
                _target_id(parts, headers),
                status,
                actor_for(grant, request.client.host if request.client else None),
            )
            try:
                if audit.is_urgent(event):
                    await run_in_threadpool(audit.record, event)
                else:
                    audit.record(event)
            except Exception:
                log.exception("could not write the audit event")
        children = counted.get((interaction, res_type, status))
        if children is None:  # a labels() lookup per request costs more than the increment
            children = counted[interaction, res_type, status] = (
                metrics.REQUESTS.labels(interaction, res_type, str(status)),
                metrics.REQUEST_SECONDS.labels(interaction, res_type),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        if request.method == "HEAD":
            body, stream = None, None
        if stream is not None:
            return StreamingResponse(stream, status, headers, media_type=media_type)
        return Response(body, status, headers, media_type=media_type if body is not None else None)

    app.router.add_route("/fhir", fhir_endpoint, methods=METHODS)
    hl7 = runtime.hl7_processor("map")  # over HTTP the caller waits for the mapping result
    app.state.hl7 = hl7
    app.router.routes.extend(hl7_routes(hl7, policy))
    app.router.add_route("/fhir/{path:path}", fhir_endpoint, methods=METHODS)
    if imaging is not None:
        from dicomweb_bridge.http import routes as imaging_routes

        app.router.routes.extend(imaging_routes(app, imaging))
    from cds_hooks.routes import CdsHooks

    app.state.cds = CdsHooks(
        runtime.cds_config(), store, app.state.fhir_reads, policy, access_for, audit
    )
    app.router.routes.extend(app.state.cds.routes())
    from apps.imaging import routes as imaging_app
    from cds_hooks.config import public_root
    from openemr_bridge.setup import frame_origins

    imaging_app.register(app.state.auth.registry, public_root(base_url))  # at first start
    app.router.routes.extend(imaging_app.routes(base_url, frame_origins(openemr)))
    from openemr_bridge.routes import build_bridge
    from openemr_bridge.routes import routes as openemr_routes

    app.state.openemr_launch = build_bridge(openemr, ctx, app.state.auth, syncer)
    from openemr_bridge.consumer import register as register_openemr_push

    register_openemr_push(outbox_runner, openemr, ctx)
    if relay is not None:
        relay.install(outbox_runner)  # the workers drain; this runner asks them to
    app.router.routes.extend(openemr_routes(openemr, app.state.openemr_launch))

    def console_fhir(
        grant: Grant, path: list[str], params: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any]]:
        """A console user's FHIR read: the REST dispatch with that user's access."""
        request_ctx = replace(ctx, access=access_for(grant)) if settings.auth_enabled else ctx
        try:
            response = dispatch(request_ctx, FhirRequest("GET", path, params, {}))
            status, body = response.status, response.body
        except Exception as exc:  # noqa: BLE001 - `failure` decides what the user sees
            error = failure(exc)
            status, body = error.status, orjson.dumps(error.outcome())
        return status, orjson.loads(body or b"{}")

    app.router.routes.extend(
        console_routes(
            ConsoleDeps(
                engine=engine,
                auth=auth_server,
                processor=hl7,
                fhir=console_fhir,
                audit=audit or AuditTrail(store),
                health=services.health,
                session_seconds=settings.console_session_hours * 3600,
                secure_cookies=runtime.auth_config().secure_cookies,
            )
        )
    )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current = schema_is_current(engine)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
        if not current:
            return JSONResponse(
                {"status": "unavailable", "reason": "database migrations pending"}, 503
            )
        health, failed = services.health(), services.failed_required()
        if failed:
            reason = f"required service failed: {', '.join(failed)}"
            return JSONResponse(
                {"status": "unavailable", "reason": reason, "services": health}, 503
            )
        return JSONResponse({"status": "ready", "services": health})

    metrics_guard = metrics_refusal(settings)
    from_database = DatabaseCollector(engine, outbox_runner.wanted)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        refused = metrics_guard(request.headers.get("authorization"))
        if refused is not None:
            status, text, headers = refused
            return PlainTextResponse(text, status, headers)
        body, content_type = metrics.render([from_database])
        return Response(body, 200, media_type=content_type)

    app.add_middleware(FhirFastPath, endpoint=fhir_endpoint)
    # SMART apps run in browsers on other origins; bearer tokens, not cookies, carry authority
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=METHODS,
        allow_headers=["*"],
        expose_headers=["Location", "ETag", "Last-Modified", "Content-Location", "X-Request-ID"],
        max_age=600,
    )
    app.add_middleware(RequestContext, log_phi=settings.log_phi)
    return app


def _ai_runtime(runtime: Runtime, ctx: Any) -> Any:
    """The AI worker and its operations ($analyze, $approve, $reject), or None (logged once)
    when the `ai` extra is not installed: FHIR, HL7 and imaging run without it."""
    if not features.AI.available:
        logging.getLogger("interop").warning("%s; AI analyses are off", features.AI.hint())
        return None
    from ai_worker.runtime import AiRuntime
    from interop import ai_operations

    ai = AiRuntime(runtime.ai_config(), ctx)
    ai_operations.register(ctx.operations, ai.service)
    return ai


class InlineReads:
    """Whether reads by id run on the event loop.

    On SQLite a read by id (one primary-key lookup in this process, never waiting for a
    writer in WAL mode) costs less than the hop to a worker thread and back, which is most of
    what a read costs: those run on the event loop. Everything else (searches, writes, the
    OpenEMR read-through) runs in threads; on PostgreSQL a read by id awaits its row on the
    loop instead (`fhir_server.store.async_reads`). A read that
    had to wait for the disk (a database larger than the page cache) would stop every other
    request meanwhile: after one that took longer than SLOW seconds, reads go to the threads
    (which wait for the disk side by side) for BACKOFF seconds, then are tried here again.
    """

    SLOW = 0.002
    BACKOFF = 1.0

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.threads_until = 0.0

    def wanted(self, now: float) -> bool:
        return self.enabled and now >= self.threads_until

    def took(self, started: float, ended: float, cpu_started: float) -> None:
        """A read slower than SLOW sends reads to the threads when the process mostly
        waited meanwhile (process CPU time under half the wall time: the disk, or no core).
        One that waited for the GIL while other threads of this process ran (the AuditEvent
        writer's batch, searches, reads still in flight on the threads) does not: the threads
        would wait for the same GIL, and counting it kept reads off the loop for good under
        load (each return found the reads still in flight there and backed off again; a read
        on a thread costs about twice the CPU of one here)."""
        wall = ended - started
        if wall > self.SLOW and mostly_waited(wall, time.process_time() - cpu_started):
            self.threads_until = ended + self.BACKOFF


def _reads_by_id(method: str, path: list[str], ctx: Any) -> bool:
    """`GET {type}/{id}` (a read, not an operation or `_history`) of a type without write
    hooks: one bounded lookup by key."""
    parts = [p for p in path if p]
    return (
        method == "GET"
        and len(parts) == 2
        and parts[1][:1] not in ("_", "$")
        and not ctx.operations.hooks.get(parts[0])
    )


def _unjudged(ctx: Any, res_type: str) -> bool:
    """The access policy lets the caller read `res_type` whatever the stored resource says
    (or there is none): a read by id then needs the one row and no other query."""
    if ctx.access is None:
        return True
    try:
        return not ctx.access.judges_stored("r", res_type)
    except FhirError:
        return False  # refused: the dispatch in a thread gives the answer, in its order


def _target_id(parts: list[str], headers: dict[str, str]) -> str | None:
    """The id an interaction touched: from the URL, or from `Location` after a create."""
    if len(parts) > 1 and parts[1][:1] not in "_$":
        return parts[1]
    location = headers.get("Location", "")
    if len(parts) == 1 and location:
        tail = location.split(f"/{parts[0]}/", 1)[-1]
        return tail.split("/", 1)[0] or None
    return None


def grant_from(data: dict[str, Any]) -> Grant:
    """A grant kept as JSON with a Subscription (`Access.describe`), back as a Grant."""
    return Grant(
        subject=data.get("subject", ""),
        scopes=frozenset(data.get("scopes", ())),
        client_id=data.get("client_id", ""),
        patient=data.get("patient"),
        encounter=data.get("encounter"),
        fhir_user=data.get("fhir_user"),
        role=data.get("role"),
    )


async def _read_body(request: Request, req: FhirRequest) -> None:
    """The body within the request limits; a `$bulk-upload` is streamed to a file instead."""
    if "\x00" in request.scope.get("path", ""):
        raise FhirError(400, "The URL holds a NUL character", "invalid")
    if req.path[-1:] == ["$bulk-upload"]:
        req.body_file = await limits.spool_body(req.headers, request.stream())
    elif (
        req.method in ("GET", "HEAD")
        and "content-length" not in req.headers
        and "transfer-encoding" not in req.headers
    ):
        return  # no body (RFC 9112 6.3): nothing to wait for
    else:
        req.body = await limits.read_body(req.headers, request.stream())


def _negotiate(req: FhirRequest) -> None:
    """JSON only: `_format` or an Accept header that excludes JSON gets 406."""
    wanted = dict(req.query).get("_format") or ""
    if wanted and "json" not in wanted:
        raise FhirError(
            406, f"_format={wanted} is not supported; this server speaks JSON", "not-supported"
        )
    accept = req.header("accept") or ""
    if accept and "json" not in accept and "*/*" not in accept and "application/*" not in accept:
        raise FhirError(
            406,
            f"Cannot produce '{accept}'; this server speaks application/fhir+json",
            "not-supported",
        )


class FhirFastPath:
    """Pure ASGI middleware: hands `/fhir` requests straight to the FHIR endpoint.

    Every FHIR interaction takes this path, so it skips the framework's per-request exception
    middleware, exit stack and route matching, which cost more than a read by id itself. The
    endpoint is the same function the `/fhir` routes are registered with (they remain for the
    OpenAPI schema and as the path for anything this middleware does not take).
    """

    def __init__(self, app: ASGIApp, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path == "/fhir" or path.startswith("/fhir/"))
            or path.startswith("/fhir/.well-known/")  # discovery documents: routes of their own
        ):
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"path": path[6:]}
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


class _RequestIds:
    """Request ids as 32 hex digits: 16 random per process (drawn again in a forked child)
    and a counter, unique without a `uuid4` (a system call) per request."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_new_request_id = _RequestIds()


class RequestContext:
    """Pure ASGI middleware: request id (echoed in X-Request-ID) and one access-log line."""

    def __init__(self, app: ASGIApp, log_phi: bool = False) -> None:
        self.app = app
        self.log_phi = log_phi

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or _new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                path = scope.get("path", "")
                if self.log_phi and scope.get("query_string"):
                    path += "?" + scope["query_string"].decode("latin-1")
                log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                        "interaction": scope.get("state", {}).get("interaction", ""),
                    },
                )
            request_id_var.reset(token)


def create_app_without_migrations() -> FastAPI:
    """Factory for uvicorn workers: `interop serve` has already migrated once, before forking."""
    from interop.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    return create_app(settings, migrate=False, channels=settings.workers == 1)
