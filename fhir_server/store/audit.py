"""AuditEvents: one per committed change, whatever channel made it, and one per read or refusal
that a surface reports; searchable like any resource.

A change's event is written by the store inside the change's own transaction
(`AuditTrail.record_change`, called by `Store.transaction` before it commits), so no change is
ever without its event. Refusals and failed writes are written before the response goes out.
Reads must stay fast: their events are queued in memory and written in batches by one
background thread as one compact row each (`audit_pending`: when, and the `Interaction`),
not as a resource with its version, outbox and ~15 index rows, which cost reads a fifth to a
third of their throughput. `expand` turns the pending rows into AuditEvent resources; the
API calls it before every request that can read AuditEvents (`may_read_audit_events`), so a
search finds exactly the events it found when each was written at once.
Who acted is an `Actor`: a user and client over REST (smart_auth
builds it from the grant), or a channel and its source (MLLP sender, Orthanc, OpenEMR site, AI
model, `$import` job).
"""

from __future__ import annotations

import logging
import threading
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
BATCH = 500
QUIET = 50  # read events per INTERVAL below which the writer expands pending rows
INTERVAL = 1.0
MAX_QUEUE = 100_000
ROWS_PER_INSERT = 250  # 500 parameters: within any SQLite build's limit (999 before 3.32)
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
    """SQLite: one INSERT of `n` audit_pending rows. executemany steps once per row and
    releases and retakes the GIL each time, which under load hands the event loop's GIL
    back and forth hundreds of times per batch; one statement does it once."""
    return "INSERT INTO audit_pending (recorded, event) VALUES " + ", ".join(["(?, ?)"] * n)


def _pack(recorded: int, event: Interaction) -> tuple[int, str]:
    """An `audit_pending` row: (recorded, the event as a JSON array)."""
    a = event.actor  # field by field: dataclasses.astuple deep-copies, ten times slower
    actor = (
        (a.subject, a.fhir_user, a.client_id, a.patient, a.address, a.channel, a.source)
        if a is not None
        else None
    )
    fields = (event.method, event.interaction, event.res_type, event.res_id, event.status, actor)
    return recorded, orjson.dumps(fields).decode()


def _unpack(text: str) -> Interaction:
    method, interaction, res_type, res_id, status, actor = orjson.loads(text)
    who = Actor(*actor) if actor is not None else None
    return Interaction(method, interaction, res_type, res_id, status, who)


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
        self._thread: threading.Thread | None = None

    def install(self) -> AuditTrail:
        """Make the store audit every change it commits, from any channel."""
        self.store.audit = self
        return self

    @staticmethod
    def is_urgent(event: Interaction) -> bool:
        """Changes and refusals are written at once (call `record` off the event loop)."""
        return event.interaction in WRITES or event.status in (401, 403) or event.method != "GET"

    def record(self, event: Interaction) -> None:
        if self.is_urgent(event):
            self._write([audit_event(event, to_instant(now_us()))])
            return
        self._queue.append((now_us(), event))
        if self._thread is None:
            self._ensure_thread()
        if len(self._queue) >= BATCH:
            self._wake.set()

    def record_change(
        self, tx: Transaction, actor: Actor | None, interaction: str | None = None
    ) -> None:
        """A committed change's event, written in the change's own transaction: committed
        with it or not at all (`Store.transaction` calls this before it commits)."""
        resource = change_event(tx.changes, actor, interaction)
        if resource is not None:
            tx.create(resource, trusted=True, index=audit_index(resource))

    def flush(self) -> None:
        """Write everything queued and make it searchable AuditEvents (tests)."""
        self._drain()
        self.expand()

    def _drain(self) -> int:
        """Write what is queued as compact `audit_pending` rows, a batch per statement; how
        many."""
        written = 0
        while self._queue:
            batch = [_pack(*self._queue.popleft()) for _ in range(min(BATCH, len(self._queue)))]
            with self.store.transaction() as tx:
                if self.store.sql.postgres:  # COPY: one round trip, not one per row
                    with tx.cursor.copy("COPY audit_pending (recorded, event) FROM STDIN") as cp:
                        for row in batch:
                            cp.write_row(row)
                else:  # one statement per ROWS_PER_INSERT rows, not one step per row
                    for start in range(0, len(batch), ROWS_PER_INSERT):
                        part = batch[start : start + ROWS_PER_INSERT]
                        tx.cursor.execute(_insert_rows(len(part)), [v for r in part for v in r])
            written += len(batch)
        return written

    def expand(self, batches: int | None = None) -> bool:
        """Turn the pending read events (this process's queue and every process's rows) into
        AuditEvent resources, in order; before anything reads AuditEvents. On PostgreSQL one
        expander at a time (a transaction lock): a concurrent one waits, then finds the rows
        gone and the resources committed. `batches`: stop after that many (of BATCH events);
        returns whether rows may remain."""
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
                tx.cursor.execute(sql.pending_audit, (BATCH,))
                rows = tx.cursor.fetchall()
                if not rows:
                    return False
                for _, recorded, text in rows:
                    resource = audit_event(_unpack(text), to_instant(recorded))
                    tx.create(resource, trusted=True, index=audit_index(resource))
                tx.cursor.execute(sql.expanded_audit, (rows[-1][0],))
            if len(rows) < BATCH:
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
        """Drain the queue every INTERVAL; while reads are few (not under load), also expand
        a batch of pending rows, so the first AuditEvent search after a busy hour has little
        left to do."""
        backlog = True
        while not self._stop.is_set():
            self._wake.wait(INTERVAL)
            self._wake.clear()
            try:
                if self._drain() >= QUIET:
                    backlog = True
                elif backlog:
                    backlog = self.expand(batches=1)
            except Exception:  # noqa: BLE001 - keep the writer alive; the batch is logged
                log.exception("could not write audit events")

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.store.transaction() as tx:
            for resource in batch:
                # built here: test_smart_audit validates the shape and its index rows
                tx.create(resource, trusted=True, index=audit_index(resource))
