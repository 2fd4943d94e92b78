"""AuditEvents: one per FHIR interaction and authorization decision, searchable like any resource.

Reads must stay fast, so their events are queued in memory and written in batches by one
background thread (one transaction per batch, through the store's one write path). A change's
event is written inside the change's own transaction (`record_in`), so a change is never
without its event; refusals and failed writes are written before the response goes out.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.clock import now_us, to_instant
from fhir_server.search.extract import IndexRows, rows_from_values
from fhir_server.store.repository import Store, Transaction
from smart_auth.policy import Grant

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
INTERVAL = 1.0
MAX_QUEUE = 100_000
MAX_ENTITIES = 100  # a large transaction names its first hundred resources


@dataclass(frozen=True, slots=True)
class Interaction:
    method: str
    interaction: str
    res_type: str
    res_id: str | None
    status: int
    address: str | None
    grant: Grant | None


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


def audit_event(
    event: Interaction, recorded: str, touched: list[str] | None = None
) -> dict[str, Any]:
    """The AuditEvent of one interaction; `touched`: every resource a Bundle changed."""
    grant = event.grant
    outcome = "0" if event.status < 400 else ("4" if event.status < 500 else "8")
    user: dict[str, Any] = {"requestor": True}
    if grant is None:
        user["who"] = {"display": "anonymous"}
    elif grant.fhir_user:
        user["who"] = {"reference": grant.fhir_user}
        user["altId"] = grant.subject
    else:
        user["who"] = {"display": grant.subject}
    if event.address:
        user["network"] = {"address": event.address, "type": "2"}
    agents = [user]
    if grant is not None and grant.client_id:
        agents.append(
            {
                "who": {"identifier": {"system": "urn:interop:client", "value": grant.client_id}},
                "requestor": False,
            }
        )
    entities: list[dict[str, Any]] = []
    if event.res_type and event.res_id:
        entities.append({"what": {"reference": f"{event.res_type}/{event.res_id}"}})
    elif event.res_type:
        entities.append({"what": {"display": event.res_type}})
    entities.extend({"what": {"reference": ref}} for ref in (touched or [])[:MAX_ENTITIES])
    patient = grant.patient if grant is not None else None
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
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [
            {
                "system": "http://hl7.org/fhir/restful-interaction",
                "code": event.interaction or "unknown",
            }
        ],
        "action": ACTIONS.get(event.interaction, "E"),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": f"HTTP {event.status} {event.method}",
        "agent": agents,
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


class AuditTrail:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUE)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @staticmethod
    def is_urgent(event: Interaction) -> bool:
        """Changes and refusals are written at once (call `record` off the event loop)."""
        return event.interaction in WRITES or event.status in (401, 403) or event.method != "GET"

    def record(self, event: Interaction) -> None:
        resource = audit_event(event, to_instant(now_us()))
        if self.is_urgent(event):
            self._write([resource])
            return
        self._queue.append(resource)
        self._ensure_thread()
        if len(self._queue) >= BATCH:
            self._wake.set()

    def record_in(self, tx: Transaction, event: Interaction) -> None:
        """A successful change's event, written in the change's own transaction: committed
        with it or not at all (Context.before_commit)."""
        changed = [(t, i) for t, i, _ in tx.changes if t != "AuditEvent"]
        touched: list[str] = []
        if len(changed) == 1 and not event.res_id:
            event = replace(event, res_type=changed[0][0], res_id=changed[0][1])
        elif len(changed) > 1:
            touched = [f"{t}/{i}" for t, i in changed]
        resource = audit_event(event, to_instant(now_us()), touched)
        tx.create(resource, trusted=True, index=audit_index(resource))

    def flush(self) -> None:
        """Write everything queued (tests, shutdown)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            self._write(batch)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="audit-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep the writer alive; the batch is logged
                log.exception("could not write audit events")

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.store.transaction() as tx:
            for resource in batch:
                # built here: test_smart_audit validates the shape and its index rows
                tx.create(resource, trusted=True, index=audit_index(resource))
