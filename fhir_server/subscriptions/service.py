"""The Subscription service: validates Subscription writes, records their owners, keeps their
header secrets out of the stored resource, consumes the outbox (queueing a notification per
matching change) and runs the handshakes.

It never sends anything on the write path: the outbox consumer only inserts queue rows, and
`delivery.Deliverer` (its own thread) does the network work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, false, func, insert, select

from fhir_server.api.context import _parse_json
from fhir_server.clock import now_us
from fhir_server.errors import FhirError
from fhir_server.search.extract import date_range
from fhir_server.store.models import resources
from fhir_server.store.outbox import Change
from fhir_server.store.repository import Store, Transaction
from fhir_server.subscriptions.channel import Spec, parse
from fhir_server.subscriptions.matching import matches
from fhir_server.subscriptions.models import (
    subscription_owners,
    subscription_queue,
    subscription_secrets,
)
from outbound import MB, Policy, Refused

if TYPE_CHECKING:
    from fhir_server.api.access import Access
    from fhir_server.api.context import Context, FhirRequest, FhirResponse

log = logging.getLogger("interop.subscriptions")
R = resources.c
O = subscription_owners.c  # noqa: E741
S = subscription_secrets.c
LIVE = ("requested", "active", "error")
RECHECK_SECONDS = 1.0
REDACTED = "[redacted]"  # what a stored Subscription shows for each channel.header value

AccessFrom = Callable[[dict[str, Any]], "Access"]


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    max_failures: int = 5  # consecutive failed deliveries before status becomes error
    retry_seconds: float = 2.0  # first retry delay; doubles per failure
    max_backoff_seconds: float = 300.0
    timeout_seconds: float = 10.0  # per rest-hook request
    # where rest-hook notifications may go (INTEROP_OUTBOUND_ALLOW_SUBSCRIPTIONS)
    endpoints: Policy = field(
        default_factory=lambda: Policy(
            "Subscription delivery", read_timeout=10.0, deadline=10.0, max_bytes=MB
        )  # fmt: skip
    )


class SubscriptionService:
    def __init__(
        self,
        store: Store,
        base_url: str,
        config: SubscriptionConfig,
        access_from: AccessFrom | None = None,
    ) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.access_from = access_from  # None: auth off, every subscription sees everything
        self._specs: dict[str, Spec] | None = None
        self._checked = float("-inf")
        self._mark: tuple[Any, ...] = ()
        self._lock = threading.Lock()
        self.handshakes: set[str] = set()
        self.wake: Callable[[], None] = lambda: None  # set by the deliverer
        store.content_hooks["Subscription"] = keep_secrets

    # -- the write hook (registered for Subscription, run by router.dispatch) ----------------

    def before_write(self, ctx: Context, req: FhirRequest) -> None:
        """Refuse a Subscription we could not serve; a client's write always restarts the
        handshake (status requested), unless it switches the subscription off."""
        if req.method.upper() not in ("POST", "PUT") or req.parsed is None and not req.body:
            return
        path = [p for p in req.path if p]
        if len(path) > 2 or path[1:2] and path[1].startswith(("_", "$")):
            return  # a search (POST _search) or an operation, not a Subscription write
        resource = _parse_json(req)
        if not isinstance(resource, dict) or resource.get("resourceType") != "Subscription":
            return
        spec = parse(resource, self.base_url)
        if spec.channel == "rest-hook":
            try:
                self.config.endpoints.check_destination(spec.endpoint)
            except Refused as exc:
                raise FhirError(
                    400,
                    f"Subscription.channel.endpoint is refused: {exc}",
                    "security",
                    ["Subscription.channel.endpoint"],
                ) from None
        if resource.get("status") != "off":
            resource["status"] = "requested"
            resource.pop("error", None)
        req.parsed = resource

    def after_write(self, ctx: Context, response: FhirResponse) -> None:
        """Remember who wrote it: notifications are limited to what that client may read."""
        location = response.headers.get("Content-Location") or response.headers.get("Location")
        if response.status >= 300 or not location or "/Subscription/" not in location:
            return
        sub_id = location.split("/Subscription/", 1)[1].split("/", 1)[0]
        access = ctx.access
        grant = access.describe() if access is not None else {}
        requester = access.requester() if access is not None else ""
        values = {"sub_id": sub_id, "requester": requester, "grant": orjson.dumps(grant).decode()}
        if ctx.tx is not None:
            self._save_owner(ctx.tx.conn, values)
        else:
            with self.store.write_connection() as conn:
                self._save_owner(conn, values)

    @staticmethod
    def _save_owner(conn: Any, values: dict[str, Any]) -> None:
        conn.execute(delete(subscription_owners).where(O.sub_id == values["sub_id"]))
        conn.execute(insert(subscription_owners).values(**values))

    def owner(self, sub_id: str) -> tuple[str, dict[str, Any]] | None:
        with self.store.connection() as conn:
            row = conn.execute(select(O.requester, O.grant).where(O.sub_id == sub_id)).first()
        return (row[0], orjson.loads(row[1])) if row is not None else None

    # -- the cache of live subscriptions --------------------------------------------------------

    def watched_types(self) -> frozenset[str]:
        """What the outbox consumer needs to see: Subscriptions themselves, and the types
        that live subscriptions watch (nothing else can match)."""
        live = {s.res_type for s in self.specs().values() if s.status in ("active", "error")}
        return frozenset({"Subscription", *live})

    def specs(self) -> dict[str, Spec]:
        """The live subscriptions, reloaded when any process of the deployment changed one
        (checked at most every `RECHECK_SECONDS`): the process that consumes a change is not
        always the one that saw the Subscription written."""
        now = time.monotonic()
        with self._lock:
            if self._specs is not None and now - self._checked < RECHECK_SECONDS:
                return self._specs
            self._checked = now
        mark = self._fingerprint()
        with self._lock:
            if self._specs is None or mark != self._mark:
                self._specs, self._mark = self._load(), mark
                self.handshakes |= {i for i, s in self._specs.items() if s.status == "requested"}
            return self._specs

    def _fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a Subscription is created, updated or deleted (one index read)."""
        with self.store.connection() as conn:
            row = conn.execute(
                select(func.count(), func.max(R.last_updated), func.sum(R.version_id)).where(
                    R.res_type == "Subscription"
                )
            ).one()
        return tuple(row)

    def _load(self) -> dict[str, Spec]:
        specs: dict[str, Spec] = {}
        with self.store.connection() as conn:
            secrets = dict(conn.execute(select(S.sub_id, S.headers)).all())
            rows = conn.execute(
                select(R.body).where(R.res_type == "Subscription", R.deleted == false())
            )
            for (body,) in rows:
                resource = orjson.loads(body)
                spec = self._spec(resource, secrets.get(str(resource.get("id"))))
                if spec is not None:
                    specs[spec.sub_id] = spec
        return specs

    def _spec(self, resource: dict[str, Any], secret: str | None) -> Spec | None:
        """What delivery needs: the stored resource, with the header values put back."""
        if resource.get("status") not in LIVE:
            return None
        end = resource.get("end")
        if isinstance(end, str):
            try:
                if date_range(end)[1] <= now_us():
                    return None  # past its end: it no longer notifies
            except ValueError:
                pass
        if secret is not None:
            resource = {
                **resource,
                "channel": {**resource["channel"], "header": orjson.loads(secret)},
            }
        try:
            spec = parse(resource, self.base_url)
        except FhirError:
            return None  # written before a rule changed; it simply does not notify
        written = (resource.get("meta") or {}).get("lastUpdated")
        try:
            since = date_range(written)[0] if isinstance(written, str) else 0
        except ValueError:
            since = 0
        # a subscription is about what happens from now on: changes committed before it was
        # written (a backlog the outbox consumer has not reached yet) never notify it
        return replace(spec, since=since)

    def _refresh(self, sub_id: str) -> None:
        stored = self.store.read("Subscription", sub_id)
        spec = None
        if stored is not None and not stored.deleted:
            with self.store.connection() as conn:
                secret = conn.execute(select(S.headers).where(S.sub_id == sub_id)).scalar()
            spec = self._spec(stored.json(), secret)
        specs = self.specs()
        with self._lock:
            if spec is None:
                specs.pop(sub_id, None)
                self.handshakes.discard(sub_id)
            else:
                specs[sub_id] = spec
                if spec.status == "requested":
                    self.handshakes.add(sub_id)
        if spec is None:
            with self.store.write_connection() as conn:
                conn.execute(
                    delete(subscription_queue).where(subscription_queue.c.sub_id == sub_id)
                )
                if stored is None or stored.deleted:
                    conn.execute(delete(subscription_secrets).where(S.sub_id == sub_id))
        self.wake()

    # -- the outbox consumer -------------------------------------------------------------------

    def handle(self, change: Change) -> None:
        """Queue a notification for every live subscription this change matches."""
        if change.res_type == "Subscription":
            self._refresh(change.res_id)
        if change.interaction == "delete":
            return
        candidates = [
            s
            for s in self.specs().values()
            if s.res_type == change.res_type
            and s.status in ("active", "error")
            and change.created >= s.since
        ]
        if not candidates:
            return
        queued = []
        with self.store.connection() as conn:
            for spec in candidates:
                allowed, access = self._access(spec.sub_id)
                if allowed and matches(conn, spec, change.res_id, self.base_url, access):
                    queued.append(spec.sub_id)
        if queued:
            stamp = now_us()
            rows = [
                {
                    "sub_id": sub_id,
                    "res_type": change.res_type,
                    "res_id": change.res_id,
                    "version_id": change.version_id,
                    "created": stamp,
                    "attempts": 0,
                    "next_attempt": stamp,
                }
                for sub_id in queued
            ]
            with self.store.write_connection() as conn:
                conn.execute(insert(subscription_queue), rows)
            self.wake()

    def _access(self, sub_id: str) -> tuple[bool, Access | None]:
        """(may notify at all, the owner's access or None with auth off); an owner that is
        not known with auth on never gets anything."""
        if self.access_from is None:
            return True, None
        owner = self.owner(sub_id)
        if owner is None or not owner[1]:
            return False, None
        return True, self.access_from(owner[1])

    # -- status, set by the server through the one write path ---------------------------------

    def set_status(self, sub_id: str, status: str, error: str | None = None) -> None:
        with self.store.transaction() as tx:
            found = tx.current("Subscription", sub_id, lock=True)
            if found is None or found[1].deleted:
                return
            resource = found[1].json()
            if resource.get("status") == "off":
                return
            resource["status"] = status
            if error:
                resource["error"] = error[:1000]
            else:
                resource.pop("error", None)
            tx.update("Subscription", sub_id, resource)
        log.info("subscription status", extra={"subscription": sub_id, "status": status})


def keep_secrets(tx: Transaction, sub_id: str, resource: dict[str, Any]) -> None:
    """The store's content hook for Subscriptions, on every write path: `channel.header`
    values (the endpoint's credentials) go to `subscription_secrets`, and the resource keeps
    only the header names, so no read, search, history, export or notification shows them.
    A value written as REDACTED keeps the stored one (a client may PUT back what it read)."""
    channel = resource.get("channel")
    headers = channel.get("header") if isinstance(channel, dict) else None
    conn = tx.conn
    before = conn.execute(select(S.headers).where(S.sub_id == sub_id)).scalar()
    conn.execute(delete(subscription_secrets).where(S.sub_id == sub_id))
    if not isinstance(channel, dict) or not isinstance(headers, list) or not headers:
        return
    old: dict[str, str] = {}
    for header in orjson.loads(before) if before else []:
        name, _, value = str(header).partition(":")
        old.setdefault(name.strip().lower(), value.strip())
    kept, shown = [], []
    for header in headers:
        name, sep, value = str(header).partition(":")
        name, value = name.strip(), value.strip()
        if value == REDACTED:
            value = old.get(name.lower(), REDACTED)
        kept.append(f"{name}: {value}" if sep else str(header))
        shown.append(f"{name}: {REDACTED}" if sep else REDACTED)
    conn.execute(
        insert(subscription_secrets).values(sub_id=sub_id, headers=orjson.dumps(kept).decode())
    )
    channel["header"] = shown
