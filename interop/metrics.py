"""What `/metrics` serves beyond the processes' counters, and who may read it.

`DatabaseCollector` computes, at scrape time, the series the database knows: the HL7 inbox
backlog, each outbox consumer's lag, AI and Bulk Data jobs by status, the subscription
queue. Asked of the database, they are the same whichever replica or worker process answers,
and right after a crash (no process has to remember them). `metrics_refusal` is the one access
rule of `/metrics` (the API's and the worker's): `INTEROP_METRICS` and its token file.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import Engine, and_, exists, func, select

from ai_worker.jobs import ai_jobs
from fhir_server import metrics
from fhir_server.bulk.models import bulk_jobs
from fhir_server.store.models import outbox
from fhir_server.store.outbox import outbox_consumers, outbox_done
from fhir_server.subscriptions.models import subscription_queue
from hl7_listener.inbox import hl7_messages
from interop.settings import Settings, read_tokens

log = logging.getLogger("interop.metrics")
Refusal = tuple[int, str, dict[str, str]]  # status, text, headers


class DatabaseCollector:
    """Gauges read from the database when Prometheus scrapes (a handful of indexed queries)."""

    def __init__(
        self, engine: Engine, wanted: Callable[[str], Collection[str] | None] | None = None
    ) -> None:
        """`wanted(consumer)`: the resource types an outbox consumer handles (None: all), so
        changes it skips do not count as its lag."""
        self.engine = engine
        self.wanted = wanted or (lambda _name: None)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("interop_database_up", "1 when the scrape could read the database")
        try:
            families = list(self._families(time.time()))
        except Exception as exc:  # noqa: BLE001 - a scrape reports the database down, not a 500
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, now: float) -> Iterator[Metric]:
        now_us = int(now * 1_000_000)
        with self.engine.connect() as conn:
            backlog = conn.execute(
                select(func.count(), func.min(hl7_messages.c.received_at)).where(
                    hl7_messages.c.status == "received"
                )
            ).one()
            consumers = conn.execute(
                select(outbox_consumers.c.name, outbox_consumers.c.floor)
            ).all()
            lags = []
            for name, floor in consumers:
                done = exists().where(
                    and_(outbox_done.c.consumer == name, outbox_done.c.outbox_pk == outbox.c.pk)
                )
                query = select(func.count(), func.min(outbox.c.created)).where(
                    outbox.c.pk > floor, ~done
                )
                types = self.wanted(name)
                if types is not None:
                    query = query.where(outbox.c.res_type.in_(sorted(types)))
                row = conn.execute(query).one()
                lags.append((name, row[0], row[1]))
            ai = conn.execute(
                select(ai_jobs.c.model, ai_jobs.c.status, func.count())
                .where(ai_jobs.c.status.in_(("queued", "running")))
                .group_by(ai_jobs.c.model, ai_jobs.c.status)
            ).all()
            bulk = conn.execute(
                select(bulk_jobs.c.kind, bulk_jobs.c.status, func.count()).group_by(
                    bulk_jobs.c.kind, bulk_jobs.c.status
                )
            ).all()
            queue = conn.execute(
                select(
                    func.count(),
                    func.min(subscription_queue.c.created),
                    func.count().filter(subscription_queue.c.attempts > 0),
                )
            ).one()

        yield _gauge("interop_hl7_inbox_backlog", "HL7 v2 messages stored, not yet mapped",
                     backlog[0])  # fmt: skip
        yield _gauge("interop_hl7_inbox_oldest_seconds",
                     "Age of the oldest unmapped HL7 v2 message (0: none)",
                     _age(backlog[1], now_us))  # fmt: skip

        lag = GaugeMetricFamily(
            "interop_outbox_lag_seconds",
            "Age of the oldest change a consumer has not finished (0: caught up)",
            labels=["consumer"],
        )
        behind = GaugeMetricFamily(
            "interop_outbox_pending", "Changes a consumer has not finished", labels=["consumer"]
        )
        for name, count, first in lags:
            lag.add_metric([name], _age(first, now_us))
            behind.add_metric([name], count)
        yield lag
        yield behind

        jobs = GaugeMetricFamily(
            "interop_ai_jobs", "AI jobs waiting or running, by model", labels=["model", "status"]
        )
        for status in ("queued", "running"):  # both present even when zero: alerts need them
            if not any(s == status for _, s, _ in ai):
                jobs.add_metric(["", status], 0)
        for model, status, count in ai:
            jobs.add_metric([model, status], count)
        yield jobs

        bulk_family = GaugeMetricFamily(
            "interop_bulk_jobs",
            "Bulk Data jobs kept, by kind and status",
            labels=["kind", "status"],
        )
        for kind, status, count in bulk:
            bulk_family.add_metric([kind, status], count)
        yield bulk_family

        yield _gauge("interop_subscription_queue", "Notifications waiting for delivery",
                     queue[0])  # fmt: skip
        yield _gauge("interop_subscription_queue_retrying",
                     "Notifications waiting after at least one failed attempt",
                     queue[2])  # fmt: skip
        yield _gauge("interop_subscription_queue_oldest_seconds",
                     "Age of the oldest undelivered notification (0: none)",
                     _age(queue[1], now_us))  # fmt: skip


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge without labels, read from the database at scrape time."""
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _age(created_us: int | None, now_us: int) -> float:
    return max(0.0, (now_us - created_us) / 1_000_000) if created_us else 0.0


def metrics_refusal(settings: Settings) -> Callable[[str | None], Refusal | None]:
    """Who may read /metrics (INTEROP_METRICS): nobody (off), a scraper presenting the bearer
    token of INTEROP_METRICS_TOKEN_FILE (token, the default; closed while no file is set), or
    anyone who reaches the port (on). Returns the refusal for a request, or None to serve."""
    tokens: tuple[str, ...] = ()
    if settings.metrics == "token" and settings.metrics_token_file:
        tokens = read_tokens(settings.metrics_token_file, "INTEROP_METRICS_TOKEN_FILE")

    def refusal(authorization: str | None) -> Refusal | None:
        if settings.metrics == "on":
            return None
        if not tokens:
            return 404, "metrics are off (INTEROP_METRICS, INTEROP_METRICS_TOKEN_FILE)\n", {}
        scheme, _, presented = (authorization or "").partition(" ")
        matched = [hmac.compare_digest(presented.strip().encode(), t.encode()) for t in tokens]
        if scheme.lower() == "bearer" and any(matched):
            return None
        return 401, "a bearer token is required\n", {"WWW-Authenticate": 'Bearer realm="metrics"'}

    return refusal


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client holds one thread, never the probe or the next scrape


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def serve_worker_metrics(settings: Settings) -> WSGIServer | None:
    """`interop worker`'s own small HTTP endpoint (INTEROP_WORKER_METRICS_PORT): `/metrics`
    (every pool process's counters, under the same rule as the API's) and `/healthz` for a
    liveness probe. Runs in a daemon thread of the worker's main process."""
    if not settings.worker_metrics_port:
        return None
    refusal = metrics_refusal(settings)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status": "ok"}']
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        refused = refusal(environ.get("HTTP_AUTHORIZATION"))
        if refused is not None:
            status, text, headers = refused
            reason = {401: "Unauthorized", 404: "Not Found"}[status]
            start_response(f"{status} {reason}", [("Content-Type", "text/plain"), *headers.items()])
            return [text.encode()]
        body, content_type = metrics.render()
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    server = make_server(
        settings.host, settings.worker_metrics_port, app, server_class=_Server, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    log.info("worker metrics on %s:%s", settings.host, settings.worker_metrics_port)
    return server
