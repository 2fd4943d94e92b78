"""The outbox relayed to Celery (INTEROP_REDIS_URL set): consumers run on `interop worker`.

The database is the truth, Celery the transport. A change is pending for a consumer until
the consumer's handler has run on it and marked it done (`fhir_server.store.outbox`); a
consumer is drained by one process at a time, the holder of its lease `outbox:{name}`
(`fhir_server.store.work`), exactly as without Redis. What changes is who drains: not the API
replicas but the Celery workers, in `outbox.drain` tasks.

- An API replica's outbox runner does not drain; per consumer (woken by commits, and every
  second) it looks whether changes are pending and nobody holds the consumer's lease, and
  then asks for a drain (`outbox.drain`, a message carrying only the consumer's name). While
  a request of its own is on its way (sent less than a lease ago, and no worker has taken the
  lease since) it does not ask again, so a backlog on the queue is not flooded.
- A worker receiving the request takes the lease (or finds another worker holds it: nothing
  to do), runs the consumer's own handler (AI trigger, Subscriptions, OpenEMR push) on what is
  pending, marks each change done, hands the lease back, looks once more, and returns.
- A worker killed mid-drain stops renewing the lease; once it has run out
  (INTEROP_LEASE_SECONDS) the replicas see changes pending and the lease free, and ask again:
  a survivor takes the lease and handles what the dead one had not marked done (at least
  once). A request lost with a dead worker, or with Redis, is asked again a lease later. The
  broker's redelivery (its visibility timeout) is not relied on; a redelivered request is a
  harmless no-op. Without a crash each change is handled once: a drainer reads what is
  pending only once it holds the lease.

Subscription notifications are sent by `subscriptions.deliver` tasks on the same queue: each
subscription by the worker holding its lease `subscription:{id}` (the queue rows stay until
sent), asked for when the Subscription consumer queues one and by the singleton sweep while
rows are due (so also when their deliverer died).

Without Redis none of this is used: the same runner drains in the API or worker process.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from celery import Celery
from sqlalchemy import select

from ai_worker.celery_app import celery
from fhir_server.clock import now_us
from fhir_server.store.work import leases
from fhir_server.subscriptions.models import subscription_queue

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fhir_server.subscriptions.delivery import Deliverer
    from interop.outbox_runner import Consumer, OutboxRunner

QUEUE = "outbox"
# a worker drains one consumer this long at most per task, then asks again (other tasks of
# its process get their turn)
DRAIN_BUDGET_SECONDS = 10.0
log = logging.getLogger("interop.outbox")


class Relay:
    """The API side: asks the workers for drains and deliveries on the `outbox` queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.runner: OutboxRunner | None = None
        self._asked = 0.0
        self._lock = threading.Lock()
        self._requested: dict[str, int] = {}  # consumer -> when this process asked (UTC us)

    def install(self, runner: OutboxRunner) -> None:
        """The runner's consumers are drained by workers from now on; it asks for them."""
        self.runner = runner
        runner.publish = self.request

    def request(self, consumer: Consumer) -> int:
        """Ask a worker to drain `consumer` if it has changes pending and nobody drains it;
        returns 0 (nothing is handled here)."""
        runner = self.runner
        assert runner is not None
        name = consumer.name
        wanted = runner.wanted(name)
        if wanted is not None and not wanted:
            return 0  # no type wanted now (no live Subscription, say)
        if not runner.outbox.pending(name, 1, wanted):
            return 0
        now = now_us()
        with runner.outbox.engine.connect() as conn:
            lease = conn.execute(
                select(leases.c.owner, leases.c.until, leases.c.acquired).where(
                    leases.c.name == f"outbox:{name}"
                )
            ).first()
        if lease is not None and lease.owner is not None and lease.until >= now:
            return 0  # a worker drains it, and looks again before it lets go
        asked = self._requested.get(name)
        lease_us = int(runner.outbox.lease_seconds * 1_000_000)
        taken_since = lease is not None and asked is not None and lease.acquired >= asked
        if asked is not None and now - asked < lease_us and not taken_since:
            return 0  # our request is on its way (or waits behind others on the queue)
        try:
            self.app.send_task("outbox.drain", args=[name], queue=QUEUE)
        except Exception:  # noqa: BLE001 - Redis is away: asked again at the next round
            consumer.failures += 1
            log.warning("could not ask for a drain of outbox consumer %s", name, exc_info=True)
            return 0
        consumer.failures = 0
        self._requested[name] = now
        return 0

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


@celery.task(name="outbox.drain", acks_late=True)
def drain(consumer: str) -> int:
    """Drain `consumer` if this process can take its lease (else another worker does)."""
    runner: OutboxRunner = worker_app().state.outbox_runner
    handled, more = runner.drain_leased(consumer, DRAIN_BUDGET_SECONDS)
    if more:  # the budget ran out: the rest in a task of its own
        drain.apply_async(args=[consumer], queue=QUEUE)
    return handled


@celery.task(name="outbox.handle", acks_late=True)
def handle(consumer: str, fields: list[object]) -> int:
    """A change published by an earlier version (one message per change): the change is
    pending in the database, so this is a drain request."""
    return int(drain(consumer))


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
