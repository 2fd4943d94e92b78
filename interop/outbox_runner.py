"""The in-process outbox runner: hands each committed change to every registered consumer.

It runs beside the API in `interop serve` (the embedded default) and in `interop worker`.
With Redis (interop.outbox_relay) the API replicas only publish drain requests (`publish`)
and a Celery worker drains a consumer in a task (`drain_leased`), under the same lease.
Consumers must be idempotent (delivery is at least once). A consumer that raises keeps the
change pending and is retried with backoff (1 s doubling to 60 s), without holding up the
other consumers or any write. Permanent failures are the consumer's to record (a tag, a
failed Task) and then return normally, or the change would be retried forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from fhir_server.store.outbox import LEASE_SECONDS, Change, Outbox
from fhir_server.store.work import Lease

log = logging.getLogger("interop.outbox")

Handler = Callable[[Change], None]
# the resource types a consumer wants: fixed, or asked each time (e.g. the types that live
# Subscriptions watch); None for every type
Types = Collection[str] | Callable[[], Collection[str]] | None
POLL_SECONDS = 1.0
# after a wake-up, let the commits of the next moment gather: under write load a consumer
# then reads, claims and marks a batch per drain instead of one change per write
GATHER_SECONDS = 0.05
SETTLE_EVERY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Consumer:
    name: str
    handle: Handler
    types: Types = None
    batch: int = 100
    failures: int = 0
    retry_at: float = 0.0
    settled_at: float = 0.0
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lease: Lease | None = None


class OutboxRunner:
    """One thread per consumer drains the outbox (a slow consumer, such as one waiting on
    OpenEMR, never delays another); `wake()` after each commit. Per consumer, one process
    of the deployment drains: the holder of its lease (`Outbox.lease`); the others stand by.
    An idle consumer only reads, and renews its lease every third of it."""

    def __init__(self, engine: Engine, lease_seconds: float = LEASE_SECONDS) -> None:
        self.outbox = Outbox(engine, lease_seconds)
        self.consumers: dict[str, Consumer] = {}
        self._stop = threading.Event()
        self._running = False
        # with Redis: called instead of draining here (it asks a Celery worker to drain)
        self.publish: Callable[[Consumer], int] | None = None

    def register(self, name: str, handle: Handler, types: Types = None, batch: int = 100) -> None:
        """Add a consumer; its name keys its progress in the database, so keep it stable.
        Changes of types it does not want are skipped for good, and do not wake it."""
        fixed = types if callable(types) or types is None else frozenset(types)
        consumer = Consumer(name, handle, fixed, batch)
        self.consumers[name] = consumer
        if self._running:
            self._start(consumer)

    def wanted(self, name: str) -> frozenset[str] | None:
        """The types consumer `name` handles now (None: every type, or no such consumer)."""
        consumer = self.consumers.get(name)
        return _wanted(consumer) if consumer is not None else None

    def wake(self, changed: Collection[str] | None = None) -> None:
        """A Store change listener: changes of these types were committed (None: any)."""
        for consumer in list(self.consumers.values()):
            wanted = _wanted(consumer)
            if changed is None or wanted is None or not wanted.isdisjoint(changed):
                consumer.wake.set()

    def start(self) -> None:
        if not self._running:
            self._stop.clear()
            self._running = True
            for consumer in list(self.consumers.values()):
                self._start(consumer)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the change in hand, then stop; unfinished changes stay pending."""
        self._stop.set()
        self._running = False
        consumers = list(self.consumers.values())
        for consumer in consumers:
            consumer.wake.set()
        for consumer in consumers:
            if consumer.thread is not None:
                consumer.thread.join(timeout)
                consumer.thread = None
            if consumer.lease is not None:
                consumer.lease.release()  # a survivor takes over without waiting it out

    def health(self) -> dict[str, Any]:
        """Each consumer's failures in a row (0: its last batch went through)."""
        failing = {c.name: c.failures for c in self.consumers.values() if c.failures}
        return {"status": "failing" if failing else "ok",
                "consumers": {c.name: {"failures": c.failures, "leader": _leading(c)}
                              for c in self.consumers.values()}}  # fmt: skip

    def drain(self) -> int:
        """One pass over every consumer in this thread; returns the changes handled."""
        return sum(self._drain_safely(c) for c in list(self.consumers.values()))

    def _start(self, consumer: Consumer) -> None:
        consumer.thread = threading.Thread(
            target=self._loop, args=(consumer,), name=f"outbox-{consumer.name}", daemon=True
        )
        consumer.thread.start()

    def _loop(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            self._drain_safely(consumer)
            if consumer.wake.wait(POLL_SECONDS):
                self._stop.wait(GATHER_SECONDS)
            consumer.wake.clear()

    def _drain_safely(self, consumer: Consumer) -> int:
        if self._stop.is_set() or time.monotonic() < consumer.retry_at:
            return 0
        try:
            if self.publish is not None:
                return self.publish(consumer)
            return self._drain_one(consumer)
        except Exception:
            log.exception("outbox consumer %s could not read the outbox", consumer.name)
            return 0

    def drain_leased(self, name: str, budget_seconds: float = 10.0) -> tuple[int, bool]:
        """Drain consumer `name` here if this process can take its lease, for about
        `budget_seconds`, then hand the lease back so the next request may run on any
        process (a Celery worker's `outbox.drain`). Returns (changes handled, more pending:
        the budget ran out and nobody else drains). A handler that failed keeps the lease
        until it runs out: no process retries before (the retry's backoff), then any does."""
        consumer = self.consumers.get(name)
        if consumer is None or time.monotonic() < consumer.retry_at:
            return 0, False
        if consumer.lease is None:
            consumer.lease = self.outbox.lease(consumer.name)
        until = time.monotonic() + budget_seconds
        handled = 0
        while True:
            failures = consumer.failures
            handled += self._drain_one(consumer, until)
            if consumer.failures > failures or not consumer.lease.leading:
                return handled, False  # failed (the lease stays) or another process drains
            consumer.lease.release()
            # a change committed while we held the lease may have had its request refused
            # (we were draining): look once more now that the lease is free
            wanted = _wanted(consumer)
            if (wanted is not None and not wanted) or not self.outbox.pending(name, 1, wanted):
                return handled, False
            if time.monotonic() > until:
                return handled, True

    def _drain_one(self, consumer: Consumer, until: float | None = None) -> int:
        if consumer.lease is None:
            consumer.lease = self.outbox.lease(consumer.name)
        lease = consumer.lease
        handled = 0
        while not self._stop.is_set() and (until is None or time.monotonic() < until):
            wanted = _wanted(consumer)
            if wanted is not None and not wanted:
                break  # no type wanted now (no live Subscription, say)
            # the lease first, then what is pending: what another holder marked done before
            # we took over is never read (and so never handed over twice)
            if not lease.held():
                break  # another process of the deployment drains this consumer
            changes = self.outbox.pending(consumer.name, consumer.batch, wanted)
            if not changes:
                break
            finished: list[Change] = []
            try:
                for change in changes:
                    if self._stop.is_set() or not lease.held():
                        break  # stopping, or the lease was lost: the rest stays pending
                    consumer.handle(change)
                    finished.append(change)
            except Exception:
                consumer.failures += 1
                delay = min(2.0 ** (consumer.failures - 1), MAX_BACKOFF_SECONDS)
                consumer.retry_at = time.monotonic() + delay
                log.exception(
                    "outbox consumer %s failed on a change; retrying in %.0f s",
                    consumer.name,
                    delay,
                )
                self.outbox.done(consumer.name, finished)
                return handled + len(finished)
            self.outbox.done(consumer.name, finished)
            handled += len(finished)
            consumer.failures = 0
            if len(finished) < consumer.batch:
                break
        if handled and time.monotonic() - consumer.settled_at > SETTLE_EVERY_SECONDS:
            self.outbox.settle(consumer.name, _wanted(consumer))
            consumer.settled_at = time.monotonic()
        return handled


def _leading(consumer: Consumer) -> bool:
    return consumer.lease is not None and consumer.lease.leading


def _wanted(consumer: Consumer) -> frozenset[str] | None:
    types = consumer.types
    if types is None:
        return None
    return frozenset(types() if callable(types) else types)
