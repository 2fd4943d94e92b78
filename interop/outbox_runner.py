"""The in-process outbox runner: hands each committed change to every registered consumer.

It runs beside the API in `interop serve` (the embedded default) and in `interop worker`.
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
from dataclasses import dataclass

from sqlalchemy import Engine

from fhir_server.store.outbox import Change, Outbox

log = logging.getLogger("interop.outbox")

Handler = Callable[[Change], None]
POLL_SECONDS = 1.0
SETTLE_EVERY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Consumer:
    name: str
    handle: Handler
    types: frozenset[str] | None = None
    batch: int = 100
    failures: int = 0
    retry_at: float = 0.0
    settled_at: float = 0.0


class OutboxRunner:
    """A thread that drains the outbox for its consumers; `wake()` after each commit."""

    def __init__(self, engine: Engine) -> None:
        self.outbox = Outbox(engine)
        self.consumers: dict[str, Consumer] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(
        self, name: str, handle: Handler, types: Collection[str] | None = None, batch: int = 100
    ) -> None:
        """Add a consumer; its name keys its progress in the database, so keep it stable."""
        self.consumers[name] = Consumer(name, handle, frozenset(types) if types else None, batch)

    def wake(self, _count: int = 0) -> None:
        """A Store listener: new changes were committed."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None and self.consumers:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="outbox-runner", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the change in hand, then stop; unfinished changes stay pending."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for consumer in self.consumers.values():
            try:
                self.outbox.release(consumer.name)
            except Exception:  # noqa: BLE001 - the lease simply expires
                log.warning("could not release the outbox lease of %s", consumer.name)

    def drain(self) -> int:
        """One pass over every consumer; returns how many changes were handled."""
        handled = 0
        for consumer in self.consumers.values():
            if self._stop.is_set():
                break
            if time.monotonic() < consumer.retry_at:
                continue
            try:
                handled += self._drain_one(consumer)
            except Exception:
                log.exception("outbox consumer %s could not read the outbox", consumer.name)
        return handled

    def _drain_one(self, consumer: Consumer) -> int:
        if not self.outbox.claim(consumer.name):
            return 0
        handled = 0
        while not self._stop.is_set():
            changes = self.outbox.pending(consumer.name, consumer.batch, consumer.types)
            finished: list[Change] = []
            try:
                for change in changes:
                    if self._stop.is_set():
                        break
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
            if len(changes) < consumer.batch:
                break
            self.outbox.claim(consumer.name)  # renew the lease on long drains
        if time.monotonic() - consumer.settled_at > SETTLE_EVERY_SECONDS:
            self.outbox.settle(consumer.name, consumer.types)
            consumer.settled_at = time.monotonic()
        return handled

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            self.drain()
