"""Sending queued notifications: rest-hook POSTs and websocket pings, at least once.

Per subscription, notifications go out in order; a failure holds that subscription back (and
only it) until its next attempt, the delay doubling from `retry_seconds` up to
`max_backoff_seconds`. After `max_failures` consecutive failures the Subscription's status
becomes `error` with the reason; delivery keeps being retried at the longest delay, and the
first success sets it `active` again. A websocket notification waits for a bound client.

With several processes on one database, each subscription is delivered by one of them: the
holder of its lease `subscription:{id}` (fhir_server.store.work), which reads the queue only
once it holds the lease. So no notification goes out twice unless its deliverer dies between
the POST and removing the row (then it goes out again: at least once).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
from sqlalchemy import delete, select, update

import outbound
from fhir_server import metrics
from fhir_server.clock import now_us
from fhir_server.store.work import Lease, Leases
from fhir_server.subscriptions.channel import Spec
from fhir_server.subscriptions.models import subscription_queue
from fhir_server.subscriptions.service import SubscriptionService
from fhir_server.subscriptions.websocket import Hub

log = logging.getLogger("interop.subscriptions")
Q = subscription_queue.c
BATCH = 200
UNBOUND_RETRY_US = 1_000_000


class DeliveryFailed(Exception):
    pass


class Deliverer:
    def __init__(self, service: SubscriptionService, hub: Hub, lease_seconds: float = 30.0) -> None:
        self.service = service
        self.hub = hub
        self.leases = Leases(service.store.engine)
        self.lease_seconds = lease_seconds
        self._leases: dict[str, Lease] = {}
        self.failures: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.http = outbound.Client(service.config.endpoints)
        service.wake = self._wake.set

    def start(self) -> None:
        if self._thread is None:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="subscriptions")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.release_leases()

    def release_leases(self) -> None:
        """Hand back every subscription lease this process holds (a Celery worker after a
        round: the next round may run on any worker)."""
        for lease in self._leases.values():
            lease.release()

    def lease(self, sub_id: str) -> Lease:
        """This process's view of the subscription's delivery lease."""
        found = self._leases.get(sub_id)
        if found is None:
            found = self._leases[sub_id] = Lease(
                self.leases, f"subscription:{sub_id}", self.lease_seconds
            )
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self.handshake()
                while self.deliver_due() and not self._stop.is_set():
                    pass
            except Exception:  # noqa: BLE001 - retried at the next round
                log.exception("subscription delivery round failed")

    # -- handshake: requested -> active (or error) ---------------------------------------------

    def handshake(self) -> None:
        specs = self.service.specs()
        for sub_id in list(self.service.handshakes):
            self.service.handshakes.discard(sub_id)
            spec = specs.get(sub_id)
            if spec is None or spec.status != "requested":
                continue
            if not self.lease(sub_id).held():
                continue  # its deliverer, in another process, shakes hands
            if spec.channel == "rest-hook":
                try:
                    self._post(spec, None, "handshake")
                except DeliveryFailed as exc:
                    self.service.set_status(sub_id, "error", f"handshake failed: {exc}")
                    continue
            self.service.set_status(sub_id, "active")

    # -- notifications ---------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """One pass over due notifications; returns how many were delivered."""
        now = now_us()
        due = select(subscription_queue).where(Q.next_attempt <= now).order_by(Q.pk).limit(BATCH)
        with self.service.store.connection() as conn:
            subs = {r.sub_id for r in conn.execute(due)}
        # the leases first, then the queue: rows another deliverer removed before we took a
        # subscription over are not read (so not sent twice)
        mine = sorted(sub_id for sub_id in subs if self.lease(sub_id).held())
        if not mine:
            return 0
        with self.service.store.connection() as conn:
            rows = conn.execute(due.where(Q.sub_id.in_(mine))).all()
            order = self._queue_order(conn, {r.sub_id for r in rows})
        specs = self.service.specs()
        held: set[str] = set()
        delivered = 0
        for row in rows:
            waiting = order.get(row.sub_id) or [row.pk]
            if row.sub_id in held or waiting[0] != row.pk:
                held.add(row.sub_id)  # an older notification waits for its retry: keep order
                continue
            spec = specs.get(row.sub_id)
            if spec is None:
                self._remove(row.pk)
                continue
            if not self.lease(row.sub_id).held():
                held.add(row.sub_id)  # lost it (a long stall): its new deliverer sends the rest
                continue
            try:
                if spec.channel == "websocket":
                    if not self.hub.ping(spec.sub_id):
                        held.add(row.sub_id)
                        self._later(row.pk, now + UNBOUND_RETRY_US, row.attempts, None)
                        continue
                else:
                    self._post(spec, row, "notification")
            except DeliveryFailed as exc:
                held.add(row.sub_id)
                self._failed(spec, row, str(exc))
                continue
            self._remove(row.pk)
            metrics.SUBSCRIPTION_DELIVERIES.labels(spec.channel, "delivered").inc()
            waiting.pop(0)
            delivered += 1
            if self.failures.pop(spec.sub_id, 0) or spec.status == "error":
                self.service.set_status(spec.sub_id, "active")
        return delivered

    @staticmethod
    def _queue_order(conn: Any, sub_ids: set[str]) -> dict[str, list[int]]:
        """Pending notification keys per subscription, oldest first (due or not)."""
        order: dict[str, list[int]] = {}
        if sub_ids:
            query = (
                select(Q.sub_id, Q.pk)
                .where(Q.sub_id.in_(sorted(sub_ids)))
                .order_by(Q.pk)
                .limit(BATCH * 10)
            )
            for sub_id, pk in conn.execute(query):
                order.setdefault(sub_id, []).append(pk)
        return order

    def _post(self, spec: Spec, row: Any, event: str) -> None:
        headers = outbound.clean_headers(spec.headers)  # never Host, hop-by-hop or framing
        headers["X-Subscription-Id"] = spec.sub_id
        headers["X-Subscription-Event"] = event
        body = None
        if row is not None and spec.payload:
            stored = self.service.store.vread(row.res_type, row.res_id, row.version_id)
            if stored is not None and stored.body is not None:
                body = stored.body
                headers["Content-Type"] = "application/fhir+json"
        try:
            response = self.http.post(spec.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"{spec.endpoint} answered HTTP {response.status_code}")

    def _failed(self, spec: Spec, row: Any, reason: str) -> None:
        metrics.SUBSCRIPTION_DELIVERIES.labels(spec.channel, "failed").inc()
        config = self.service.config
        attempts = row.attempts + 1
        delay = min(config.retry_seconds * 2 ** (attempts - 1), config.max_backoff_seconds)
        self._later(row.pk, now_us() + int(delay * 1_000_000), attempts, reason)
        failures = self.failures.get(spec.sub_id, 0) + 1
        self.failures[spec.sub_id] = failures
        log.warning(
            "subscription delivery failed",
            extra={"subscription": spec.sub_id, "attempt": attempts, "reason": reason},
        )
        if failures >= config.max_failures and spec.status != "error":
            self.service.set_status(
                spec.sub_id, "error", f"{failures} deliveries failed; last: {reason}"
            )

    def _later(self, pk: int, when: int, attempts: int, reason: str | None) -> None:
        with self.service.store.write_connection() as conn:
            conn.execute(
                update(subscription_queue)
                .where(Q.pk == pk)
                .values(next_attempt=when, attempts=attempts, last_error=reason)
            )

    def _remove(self, pk: int) -> None:
        with self.service.store.write_connection() as conn:
            conn.execute(delete(subscription_queue).where(Q.pk == pk))
