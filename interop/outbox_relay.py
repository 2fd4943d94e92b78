"""The outbox relayed to Celery (INTEROP_REDIS_URL set): consumers run on `interop worker`.

API replicas keep draining the outbox (per consumer, the holder of its lease), but a
consumer's handler there only publishes the change as a task on the `outbox` queue and marks
it done once Redis has it. Any `interop worker` consuming that queue runs the consumer's own
handler (AI trigger, Subscriptions, OpenEMR push), so they scale by adding workers. Late
acknowledgement: a worker killed mid-task leaves the message to be delivered again (after the
visibility timeout), so each change reaches its consumer at least once; a handler that fails
is retried with backoff. Subscription notifications are sent by `subscriptions.deliver` tasks
on the same queue (each subscription by one worker at a time: its lease), asked for by the
Subscription consumer when it queues one and by a singleton sweep for retries that fall due.

Without Redis none of this is used: the same handlers run in the process that drains.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from sqlalchemy import select

from ai_worker.celery_app import celery
from fhir_server.clock import now_us
from fhir_server.store.outbox import Change
from fhir_server.subscriptions.models import subscription_queue

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fhir_server.subscriptions.delivery import Deliverer
    from interop.outbox_runner import OutboxRunner

QUEUE = "outbox"
MAX_BACKOFF = 60.0
log = logging.getLogger("interop.outbox")


class Relay:
    """The API side: publishes changes and delivery requests to the `outbox` queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._asked = 0.0
        self._lock = threading.Lock()

    def install(self, runner: OutboxRunner) -> None:
        """Every consumer registered so far now publishes instead of handling here."""
        for consumer in runner.consumers.values():
            consumer.handle = self.publisher(consumer.name)

    def publisher(self, name: str) -> Any:
        def publish(change: Change) -> None:
            # raises while Redis is away: the change stays pending and is retried
            self.app.send_task("outbox.handle", args=[name, list(_fields(change))], queue=QUEUE)

        return publish

    def deliver_soon(self) -> None:
        """Ask a worker to send what is due (at most one request per 0.2 s from here)."""
        with self._lock:
            if time.monotonic() - self._asked < 0.2:
                return
            self._asked = time.monotonic()
        try:
            self.app.send_task("subscriptions.deliver", queue=QUEUE)
        except Exception:  # noqa: BLE001 - the sweep asks again
            log.warning("could not ask for subscription deliveries", exc_info=True)


def sweep_deliveries(relay: Relay, deliverer: Deliverer) -> None:
    """The singleton sweep: retries fall due and handshakes wait, with nobody to wake a
    worker for them; ask one when there is something to send."""
    service = deliverer.service
    waiting = any(spec.status == "requested" for spec in service.specs().values())
    with service.store.connection() as conn:
        due = conn.execute(
            select(subscription_queue.c.pk)
            .where(subscription_queue.c.next_attempt <= now_us())
            .limit(1)
        ).first()
    if due is not None or waiting:
        relay.deliver_soon()


# --- the worker side ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def worker_app() -> FastAPI:
    """The pool process's app (built after the fork, not started): its consumers' own
    handlers and its Deliverer run the tasks below."""
    from interop.app import create_app
    from interop.bulk_worker import worker_runtime

    return create_app(runtime=worker_runtime())


@celery.task(bind=True, name="outbox.handle", acks_late=True)
def handle(self: Task, consumer: str, fields: list[Any]) -> None:
    app = worker_app()
    runner = app.state.outbox_runner
    try:
        runner.local[consumer](Change(*fields))
    except Exception as exc:
        retries = int(self.request.retries or 0)
        delay = min(2.0**retries, MAX_BACKOFF)
        log.warning("outbox consumer %s failed on a change; retrying in %.0f s", consumer, delay)
        raise self.retry(countdown=delay, exc=exc, max_retries=None) from exc


@celery.task(name="subscriptions.deliver", acks_late=True)
def deliver() -> int:
    """Handshakes and due notifications, each subscription by the worker holding its lease;
    the leases are handed back after the round, so the next request may go to any worker."""
    deliverer: Deliverer = worker_app().state.deliverer
    try:
        deliverer.handshake()
        sent = 0
        while (delivered := deliverer.deliver_due()) > 0:
            sent += delivered
        return sent
    finally:
        deliverer.release_leases()


def _fields(change: Change) -> tuple[Any, ...]:
    return (change.pk, change.res_type, change.res_id, change.version_id, change.interaction,
            change.created)  # fmt: skip
