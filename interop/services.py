"""Background services: every loop of the server has a name, start, stop and a health.

A `Singleton` runs its service on exactly one process of the deployment: the one holding the
service's lease (fhir_server.store.work); the others stand by and the first to see the lease
run out (its holder crashed) takes over. Leadership shows in the service's health.

A `Loop` runs one step every `interval` seconds in a daemon thread; a step that raises is
logged and retried after a wait that doubles up to `max_backoff` (a PACS or EHR that is down
is not hammered), and the first success resets it. Components that manage their own threads
(the outbox runner, the AI runner, ...) join as a `Managed` service. `Services` starts them in
order, stops them in reverse, and reports each one's health for `/readyz`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fhir_server import metrics
from fhir_server.store.work import Lease, Leases

log = logging.getLogger("interop.services")


class Service:
    """A named background service. `required`: the server is not ready while it has failed."""

    name: str = ""
    required: bool = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """`status`: starting, ok, failing (retrying with backoff), failed or stopped."""
        raise NotImplementedError


class Loop(Service):
    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        interval: float,
        max_backoff: float = 60.0,
        required: bool = False,
        on_stop: Callable[[], None] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.name, self.step, self.interval, self.required = name, step, interval, required
        self.gate = gate  # a step runs only while it says so (a Singleton's leadership)
        self.max_backoff = max(max_backoff, interval)
        self.on_stop = on_stop
        self.failures = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.retry_in: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.on_stop is not None:
            self.on_stop()

    def run_once(self) -> bool:
        """One step, recorded; returns whether it succeeded."""
        if self.gate is not None and not self.gate():
            return True
        try:
            self.step()
        except Exception as exc:  # noqa: BLE001 - a loop keeps running; health tells
            self.failures += 1
            metrics.SERVICE_FAILURES.labels(self.name).set(self.failures)
            self.last_error, self.last_error_at = _describe(exc), time.time()
            self.retry_in = min(self.interval * 2.0**self.failures, self.max_backoff)
            log.exception("%s failed; retrying in %.0f s", self.name, self.retry_in)
            return False
        self.failures, self.retry_in, self.last_success = 0, None, time.time()
        metrics.SERVICE_FAILURES.labels(self.name).set(0)
        metrics.SERVICE_LAST_SUCCESS.labels(self.name).set(self.last_success)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.retry_in if self.retry_in is not None else self.interval)
        log.info("%s stopped", self.name)

    def health(self) -> dict[str, Any]:
        if self._thread is None:
            status = "stopped"
        elif self.failures:
            status = "failing"
        else:
            status = "ok" if self.last_success is not None else "starting"
        return {
            "status": status,
            "required": self.required,
            "interval_seconds": self.interval,
            "last_success": _iso(self.last_success),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "failures": self.failures,
            "retry_in_seconds": self.retry_in,
        }


class Managed(Service):
    """A component with threads of its own: its start and stop, and (optionally) a health
    callable returning at least `status`."""

    def __init__(
        self,
        name: str,
        start: Callable[[], object],
        stop: Callable[[], object],
        health: Callable[[], dict[str, Any]] | None = None,
        required: bool = False,
    ) -> None:
        self.name, self.required = name, required
        self._start, self._stop, self._health = start, stop, health
        self.running = False
        self.error: str | None = None

    def start(self) -> None:
        try:
            self._start()
        except Exception as exc:
            self.error = _describe(exc)
            raise
        self.running = True

    def stop(self) -> None:
        self.running = False
        self._stop()

    def health(self) -> dict[str, Any]:
        if self.error is not None:
            return {"status": "failed", "required": self.required, "last_error": self.error}
        if not self.running:
            return {"status": "stopped", "required": self.required}
        own = self._health() if self._health is not None else {}
        return {"status": "ok", "required": self.required} | own


class Singleton(Service):
    """`inner` runs on one process of the deployment at a time: the holder of the lease
    `singleton:{name}`. Every process starts `inner`, whose steps are gated on leadership
    (a Loop's `gate`); a thread here renews the lease, or keeps trying to take it."""

    def __init__(self, inner: Loop, leases: Leases, seconds: float) -> None:
        self.inner, self.name, self.required = inner, inner.name, inner.required
        self.lease = Lease(leases, f"singleton:{inner.name}", seconds)
        inner.gate = lambda: self.lease.leading
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self.lease.held()  # lead at once when nobody does
            self._thread = threading.Thread(
                target=self._run, name=f"lease-{self.name}", daemon=True
            )
            self._thread.start()
            self.inner.start()

    def _run(self) -> None:
        # a standby looks several times per lease, so a takeover follows the lease's end
        while not self._stop.wait(self.lease.seconds / 6):
            self.lease.held()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.inner.stop()
        self.lease.release()

    def health(self) -> dict[str, Any]:
        own = self.inner.health()
        leading = self.lease.leading
        if self._thread is not None and not leading:
            own["status"] = "standby"  # another process of the deployment runs it
        return own | {"leader": leading, "lease": self.lease.name,
                      "lease_error": self.lease.error}  # fmt: skip


class Services:
    """The server's background services, started and stopped from this one place."""

    def __init__(self) -> None:
        self.all: list[Service] = []

    def add(self, service: Service) -> Service:
        if any(s.name == service.name for s in self.all):
            raise ValueError(f"a service named {service.name!r} is already registered")
        self.all.append(service)
        return service

    def start(self) -> None:
        """Start each service; one that cannot start is logged and reported as failed on
        /readyz (503 when it is required), and the others run all the same."""
        for service in self.all:
            try:
                service.start()
            except Exception:  # noqa: BLE001 - its health says so
                log.exception("service %s did not start", service.name)

    def stop(self) -> None:
        for service in reversed(self.all):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - stop the others all the same
                log.exception("service %s did not stop cleanly", service.name)

    def health(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.health() for s in self.all}

    def failed_required(self) -> list[str]:
        """Required services that failed (or are failing): the server is not ready."""
        return [
            name
            for name, h in self.health().items()
            if h.get("required") and h["status"] in ("failed", "failing")
        ]


def _describe(exc: BaseException) -> str:
    """The error's type only, never its message (health is public
    to whoever reaches /readyz, so no secrets and no PHI)."""
    return type(exc).__name__


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
