"""AuditEvents: one per committed change, whatever channel made it, and one per read or refusal
that a surface reports; searchable like any resource.

A change's event is written by the store inside the change's own transaction
(`AuditTrail.record_change`, called by `Store.transaction` before it commits), so no change is
ever without its event. Refusals and failed writes are written before the response goes out.
Reads must stay fast: their events are queued in memory and written in batches by one
background thread, ROW_EVENTS events per compact row (`audit_pending`: when, and the
`Interaction`s as one JSON array), not as a resource with its version, outbox and ~15 index
rows, which cost reads a fifth to a third of their throughput (and not a row per event: a
fiftieth of the rows to insert, log and vacuum). `expand` turns the pending rows into AuditEvent
resources; the API calls it before every request that can read AuditEvents
(`may_read_audit_events`), so a search finds exactly the events it found when each was
written at once. The writer thread also expands while the server is idle, one row at a time,
and stops as soon as a request comes: expanding costs ~300 us per event, which under load
would take the GIL (and SQLite's write lock) from the requests.
Who acted is an `Actor`: a user and client over REST (smart_auth
builds it from the grant), or a channel and its source (MLLP sender, Orthanc, OpenEMR site, AI
model, `$import` job).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.clock import now_us, to_instant
from fhir_server.search.extract import IndexRows, rows_from_values
from fhir_server.search.registry import resource_types

if TYPE_CHECKING:
    from fhir_server.store.repository import Store, Transaction

log = logging.getLogger("interop.audit")

WRITES = frozenset({"create", "update", "patch", "delete", "transaction", "batch"})
ACTIONS = {
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
}
BATCH = 500  # events per expanding transaction
# Queued events that wake the writer before its INTERVAL is up. High on purpose: each drain is
# a transaction (on PostgreSQL three round trips, each a GIL hand-off between the writer and
# the event loop), so under read load one drain a second costs reads less than ten.
WAKE = 10_000
DRAIN = 5_000  # events per draining transaction (100 rows)
ROW_EVENTS = 50  # events per audit_pending row: ~15 ms of expansion, the idle writer's step
QUIET = 50  # requests per second below which the idle writer expands (0: it never does)
INTERVAL = 1.0
MAX_QUEUE = 100_000
MAX_ENTITIES = 100  # a large transaction names its first hundred resources
CHANNEL_SYSTEM = "urn:interop:channel"
REST_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
IMPORT_TYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110107",
    "display": "Import",
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user and/or OAuth client over REST (`subject` None: anonymous), or a
    channel (`channel`: hl7, orthanc, openemr, ai, import) with its `source` (the MLLP sender,
    the PACS, the OpenEMR site, the model name and version, the import job)."""

    subject: str | None = None
    fhir_user: str | None = None
    client_id: str | None = None
    patient: str | None = None  # the launch patient the grant is confined to
    address: str | None = None
    channel: str | None = None
    source: str | None = None

    @classmethod
    def of_channel(cls, channel: str, source: str) -> Actor:
        return cls(channel=channel, source=source or channel)


@dataclass(frozen=True, slots=True)
class Interaction:
    method: str
    interaction: str
    res_type: str
    res_id: str | None
    status: int
    actor: Actor | None


def may_read_audit_events(method: str, parts: list[str], query: str, body: bytes) -> bool:
    """Whether a request (method, path parts after `/fhir`, raw query string, body) can
    return or look at AuditEvents, which must then be expanded first (`AuditTrail.expand`):
    anything naming AuditEvent (its type, `_type`, `_revinclude`, `_has`, a batch entry),
    system-level searches and history, operations (`$everything`, `$export`) and
    compartment searches. Writes of other types, and reads of one resource, cannot."""
    if "AuditEvent" in query or "AuditEvent" in parts:
        return True
    if len(parts) == 2 and parts[0][:1] not in "_$" and parts[1][:1] not in "_$":
        return False  # a read, update, patch or delete of one resource: every audited read
    if method == "POST" and not parts:  # a batch or transaction: its entries may read
        return b"AuditEvent" in body
    if method not in ("GET", "HEAD", "POST"):
        return False
    if method == "POST" and parts[-1] != "_search" and parts[-1][:1] != "$":
        return False  # a create
    if not parts or parts[0][:1] in ("_", "$") or any(p[:1] == "$" for p in parts):
        return True
    return len(parts) >= 3 and parts[2] in resource_types()  # Patient/1/AuditEvent and kin


@lru_cache(maxsize=8)
def _insert_rows(n: int) -> str:
    """SQLite: one INSERT of `n` audit_pending rows (one statement, one GIL hand-off)."""
    return "INSERT INTO audit_pending (recorded, event) VALUES " + ", ".join(["(?, ?)"] * n)


def _pack(events: list[tuple[int, Interaction]]) -> tuple[int, str]:
    """One `audit_pending` row for `events` (recorded, Interaction): (the first recorded, a
    JSON array of [recorded, method, interaction, type, id, status, actor] per event). A row
    per event cost the writer a row insert (PostgreSQL: a COPY row) per read."""
    fields = []
    for recorded, event in events:
        a = event.actor  # field by field: dataclasses.astuple deep-copies, ten times slower
        actor = (
            (a.subject, a.fhir_user, a.client_id, a.patient, a.address, a.channel, a.source)
            if a is not None
            else None
        )
        fields.append(
            (recorded, event.method, event.interaction, event.res_type, event.res_id,
             event.status, actor)
        )  # fmt: skip
    return events[0][0], orjson.dumps(fields).decode()


def _unpack(recorded: int, text: str) -> list[tuple[int, Interaction]]:
    """The events of a row: a `_pack` array, or one event's array (rows written before
    events were batched: [method, interaction, type, id, status, actor], at `recorded`)."""
    data = orjson.loads(text)
    if data and isinstance(data[0], str):
        data = [[recorded, *data]]
    out = []
    for when, method, interaction, res_type, res_id, status, actor in data:
        who = Actor(*actor) if actor is not None else None
        out.append((when, Interaction(method, interaction, res_type, res_id, status, who)))
    return out


def guess_interaction(method: str, parts: list[str]) -> str:
    """The interaction a refused request asked for (it never reached the dispatcher)."""
    n = len(parts)
    if n == 0:
        return "transaction" if method == "POST" else "unknown"
    if method == "GET":
        return "read" if n == 2 and parts[1][:1] not in "_$" else "search-type"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, "unknown"
    )


def _agents(actor: Actor | None) -> list[dict[str, Any]]:
    if actor is not None and actor.channel:
        return [
            {
                "who": {
                    "identifier": {"system": CHANNEL_SYSTEM, "value": actor.channel},
                    "display": actor.channel,
                },
                "name": actor.source or actor.channel,
                "requestor": True,
            }
        ]
    user: dict[str, Any] = {"requestor": True}
    if actor is None:  # the server's own bookkeeping
        user["who"] = {"display": "interop-server"}
    elif actor.subject is None:
        user["who"] = {"display": "anonymous"}
    elif actor.fhir_user:
        user["who"] = {"reference": actor.fhir_user}
        user["altId"] = actor.subject
    else:
        user["who"] = {"display": actor.subject}
    if actor is not None and actor.address:
        user["network"] = {"address": actor.address, "type": "2"}
    agents = [user]
    if actor is not None and actor.client_id:
        agents.append(
            {
                "who": {"identifier": {"system": "urn:interop:client", "value": actor.client_id}},
                "requestor": False,
            }
        )
    return agents


def audit_event(
    event: Interaction, recorded: str, touched: list[str] | None = None
) -> dict[str, Any]:
    """The AuditEvent of one interaction; `touched`: every resource a Bundle changed."""
    actor = event.actor
    outcome = "0" if event.status < 400 else ("4" if event.status < 500 else "8")
    entities: list[dict[str, Any]] = []
    if event.res_type and event.res_id:
        entities.append({"what": {"reference": f"{event.res_type}/{event.res_id}"}})
    elif event.res_type:
        entities.append({"what": {"display": event.res_type}})
    entities.extend({"what": {"reference": ref}} for ref in (touched or [])[:MAX_ENTITIES])
    patient = actor.patient if actor is not None else None
    if patient is None and event.res_type == "Patient" and event.res_id:
        patient = event.res_id
    if patient and not (event.res_type == "Patient" and event.res_id == patient):
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    channel = actor.channel if actor is not None else None
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": IMPORT_TYPE if channel else REST_TYPE,
        "subtype": [
            {
                "system": "http://hl7.org/fhir/restful-interaction",
                "code": event.interaction or "unknown",
            }
        ],
        "action": ACTIONS.get(event.interaction, "E"),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": f"{channel} change" if channel else f"HTTP {event.status} {event.method}",
        "agent": _agents(actor),
        "source": {
            "observer": {"display": "interop-server"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if entities:
        resource["entity"] = entities
    return resource


def audit_index(resource: dict[str, Any]) -> IndexRows:
    """The search-index rows of an `audit_event` resource, picked straight from its known
    shape: evaluating the generic FHIRPath expressions cost most of an audited read.
    test_smart_audit checks that this equals the generic extraction for every shape."""
    agents = resource.get("agent", [])
    entities = resource.get("entity", [])
    who = [a["who"] for a in agents if "who" in a]
    what = [e["what"] for e in entities]
    return rows_from_values(
        "AuditEvent",
        {
            "action": [resource["action"]],
            "address": [a["network"]["address"] for a in agents if "network" in a],
            "agent": who,
            "agent-name": [a["name"] for a in agents if "name" in a],
            "altid": [a["altId"] for a in agents if "altId" in a],
            "date": [resource["recorded"]],
            "entity": what,
            "entity-role": [e["role"] for e in entities if "role" in e],
            "outcome": [resource["outcome"]],
            "patient": [
                r for r in who + what if str(r.get("reference", "")).startswith("Patient/")
            ],
            "subtype": resource.get("subtype", []),
            "type": [resource["type"]],
        },
    )


def change_event(
    changes: list[tuple[str, str, str]], actor: Actor | None, interaction: str | None
) -> dict[str, Any] | None:
    """The AuditEvent of a transaction's changes (None when it changed only AuditEvents)."""
    changed = [(t, i, what) for t, i, what in changes if t != "AuditEvent"]
    if not changed:
        return None
    if interaction is None:  # a channel's write: named after what it did
        kinds = {what for _, _, what in changed}
        interaction = kinds.pop() if len(kinds) == 1 and len(changed) == 1 else "transaction"
    status = 201 if interaction == "create" else 200
    method = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}
    event = Interaction(method.get(interaction, "POST"), interaction, "", None, status, actor)
    touched: list[str] = []
    if len(changed) == 1:
        event = Interaction(event.method, interaction, changed[0][0], changed[0][1], status, actor)
    else:
        seen = dict.fromkeys(f"{t}/{i}" for t, i, _ in changed)
        touched = list(seen)
    return audit_event(event, to_instant(now_us()), touched)


def audited(store: Store, enabled: bool) -> Store:
    """`store`, auditing every change it commits when `enabled` (INTEROP_AUTH=on with
    INTEROP_AUTH_AUDIT): what each process that writes (serve, mllp, workers, CLIs) uses."""
    if enabled:
        AuditTrail(store).install()
    return store


class AuditTrail:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: deque[tuple[int, Interaction]] = deque(maxlen=MAX_QUEUE)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._thread: threading.Thread | None = None
        self._requests = 0  # events recorded: the writer expands only while it stands still

    def install(self) -> AuditTrail:
        """Make the store audit every change it commits, from any channel."""
        self.store.audit = self
        return self

    @staticmethod
    def is_urgent(event: Interaction) -> bool:
        """Changes and refusals are written at once (call `record` off the event loop)."""
        return event.interaction in WRITES or event.status in (401, 403) or event.method != "GET"

    def record(self, event: Interaction) -> None:
        self._requests += 1
        if self.is_urgent(event):
            self._write([audit_event(event, to_instant(now_us()))])
            return
        self._queue.append((now_us(), event))
        if self._thread is None:
            self._ensure_thread()
        if len(self._queue) == WAKE:  # once: the writer then drains all, later ones too
            self._wake.set()

    def record_change(
        self, tx: Transaction, actor: Actor | None, interaction: str | None = None
    ) -> None:
        """A committed change's event, written in the change's own transaction: committed
        with it or not at all (`Store.transaction` calls this before it commits)."""
        resource = change_event(tx.changes, actor, interaction)
        if resource is not None:  # None: the change was expanding AuditEvents, no request
            self._requests += 1
            tx.create(resource, trusted=True, index=audit_index(resource))

    def flush(self) -> None:
        """Write everything queued and make it searchable AuditEvents (tests)."""
        self._drain()
        self.expand()

    def _drain(self) -> int:
        """Write what is queued as compact `audit_pending` rows of ROW_EVENTS events, up to
        DRAIN events per transaction; how many events."""
        written = 0
        queue = self._queue
        with self._draining:  # the writer and a request's `expand`: rows stay in order
            while queue:
                events = [queue.popleft() for _ in range(min(DRAIN, len(queue)))]
                rows = [
                    _pack(events[i : i + ROW_EVENTS]) for i in range(0, len(events), ROW_EVENTS)
                ]
                with self.store.transaction() as tx:
                    if self.store.sql.postgres:  # COPY: one round trip, not one per row
                        with tx.cursor.copy(
                            "COPY audit_pending (recorded, event) FROM STDIN"
                        ) as cp:
                            for row in rows:
                                cp.write_row(row)
                    else:
                        tx.cursor.execute(_insert_rows(len(rows)), [v for r in rows for v in r])
                written += len(events)
        return written

    def expand(self, batches: int | None = None, rows: int = BATCH // ROW_EVENTS) -> bool:
        """Turn the pending read events (this process's queue and every process's rows) into
        AuditEvent resources, in order; before anything reads AuditEvents. On PostgreSQL one
        expander at a time (a transaction lock): a concurrent one waits, then finds the rows
        gone and the resources committed. `batches`: stop after that many transactions of
        up to `rows` rows each; returns whether rows may remain."""
        self._drain()
        sql = self.store.sql
        with self.store.connection() as conn:  # a read first: usually nothing is pending
            if conn.exec_driver_sql("SELECT 1 FROM audit_pending LIMIT 1").first() is None:
                return False
        done = 0
        while batches is None or done < batches:
            done += 1
            with self.store.transaction() as tx:
                if sql.postgres:
                    tx.cursor.execute("SELECT pg_advisory_xact_lock(7431386914402)")
                tx.cursor.execute(sql.pending_audit, (rows,))
                pending = tx.cursor.fetchall()
                if not pending:
                    return False
                for _, recorded, text in pending:
                    for when, event in _unpack(recorded, text):
                        resource = audit_event(event, to_instant(when))
                        tx.create(resource, trusted=True, index=audit_index(resource))
                tx.cursor.execute(sql.expanded_audit, (pending[-1][0],))
            if len(pending) < rows:
                return False
        return True

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._drain()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="audit-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        """Drain the queue every INTERVAL (sooner when WAKE events wait). When fewer than
        QUIET requests a second came since the last round, expand pending rows one at a time
        until a request comes, so the first AuditEvent search after a busy hour has little
        left to do; under load it leaves them alone. (A quiet test is per round, so a short
        pause in the load, like a benchmark's between warm-up and measurement, is not one.)"""
        backlog = True
        seen, since = self._requests, time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(INTERVAL)
            self._wake.clear()
            try:
                if self._drain():
                    backlog = True
                now, requests = time.monotonic(), self._requests
                quiet = requests - seen < QUIET * (now - since)
                seen, since = requests, now
                if quiet and backlog:
                    backlog = self._expand_while_idle(seen)
            except Exception:  # noqa: BLE001 - keep the writer alive; the batch is logged
                log.exception("could not write audit events")

    def _expand_while_idle(self, seen: int) -> bool:
        """Expand pending rows one at a time (ROW_EVENTS events, ~15 ms) until a request
        comes (`_requests` is no longer `seen`): a request waits for one row at most.
        Returns whether rows may remain."""
        backlog = True
        while backlog and self._requests == seen and not self._queue and not self._stop.is_set():
            backlog = self.expand(batches=1, rows=1)
        return backlog

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.store.transaction() as tx:
            for resource in batch:
                # built here: test_smart_audit validates the shape and its index rows
                tx.create(resource, trusted=True, index=audit_index(resource))
