"""Read events are kept as compact rows and become AuditEvents before anything reads them:
whatever way a client looks at AuditEvents, it finds every read, at once and exactly once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from fhir_server.schema import audit_pending, resources
from fhir_server.store import audit
from fhir_server.store.audit import Actor, AuditTrail, Interaction, may_read_audit_events


def count(store: Any, table: Any, *where: Any) -> int:
    with store.connection() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def audit_events(store: Any) -> int:
    return count(store, resources, resources.c.res_type == "AuditEvent")


def pending_events(store: Any) -> int:
    """Events waiting in audit_pending (a row holds a batch of them)."""
    with store.connection() as conn:
        rows = conn.execute(select(audit_pending.c.recorded, audit_pending.c.event)).all()
    return sum(len(audit._unpack(recorded, text)) for recorded, text in rows)


def test_a_read_is_found_by_the_next_audit_search_without_waiting(
    http: TestClient, smart: Any, auth_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "QUIET", 0)  # the writer thread never expands in between
    admin = {"Authorization": f"Bearer {smart.backend_token('system/*.cruds')}"}
    pid = http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
    for _ in range(3):
        assert http.get(f"/fhir/Patient/{pid}", headers=admin).status_code == 200
    store = auth_app.state.store
    before = audit_events(store)  # the create's event only: reads wrote no resource yet
    auth_app.state.audit._drain()  # as the writer thread does every second
    assert audit_events(store) == before
    assert pending_events(store) == 3
    # no flush: the search itself expands what is pending
    bundle = http.get(
        "/fhir/AuditEvent", params={"entity": f"Patient/{pid}", "subtype": "read"}, headers=admin
    ).json()
    assert bundle["total"] == 3
    assert count(store, audit_pending) == 0
    event = bundle["entry"][0]["resource"]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["agent"][0]["network"]["address"]
    # and once only: a second search finds the same three
    again = http.get(
        "/fhir/AuditEvent", params={"entity": f"Patient/{pid}", "subtype": "read"}, headers=admin
    ).json()
    assert again["total"] == 3


def test_reads_are_found_through_compartments_includes_and_history(
    http: TestClient, smart: Any, auth_app: Any
) -> None:
    admin = {"Authorization": f"Bearer {smart.backend_token('system/*.cruds')}"}
    pid = http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
    assert http.get(f"/fhir/Patient/{pid}", headers=admin).status_code == 200
    compartment = http.get(f"/fhir/Patient/{pid}/AuditEvent", headers=admin).json()
    assert {e["resource"]["subtype"][0]["code"] for e in compartment["entry"]} >= {"read"}
    assert http.get(f"/fhir/Patient/{pid}", headers=admin).status_code == 200
    revinclude = http.get(
        "/fhir/Patient", params={"_id": pid, "_revinclude": "AuditEvent:entity"}, headers=admin
    ).json()
    reads = [
        e
        for e in revinclude["entry"]
        if e["resource"]["resourceType"] == "AuditEvent"
        and e["resource"]["subtype"][0]["code"] == "read"
    ]
    assert len(reads) == 2
    assert http.get(f"/fhir/Patient/{pid}", headers=admin).status_code == 200
    history = http.get("/fhir/AuditEvent/_history", params={"_count": "100"}, headers=admin)
    read_events = [
        e
        for e in history.json()["entry"]
        if e["resource"]["subtype"][0]["code"] == "read"
        and e["resource"]["entity"][0]["what"]["reference"] == f"Patient/{pid}"
    ]
    assert len(read_events) == 3


def test_concurrent_expansions_write_each_event_once(auth_app: Any) -> None:
    store = auth_app.state.store
    trail = AuditTrail(store)
    trail._thread = threading.current_thread()  # no writer thread: the test drains
    actor = Actor(subject="svc", client_id="c1", address="10.0.0.1")
    for i in range(120):
        trail.record(Interaction("GET", "read", "Observation", f"o{i}", 200, actor))
    trail._drain()
    before = audit_events(store)
    threads = [threading.Thread(target=trail.expand) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert audit_events(store) - before == 120
    assert count(store, audit_pending) == 0


def test_the_idle_writer_expands_a_row_at_a_time_and_stops_when_a_request_comes(
    auth_app: Any,
) -> None:
    store = auth_app.state.store
    trail = AuditTrail(store)
    trail._thread = threading.current_thread()  # no writer thread: the test drives it
    actor = Actor(subject="svc", client_id="c1", address="10.0.0.1")
    for i in range(3 * audit.ROW_EVENTS):
        trail.record(Interaction("GET", "read", "Observation", f"o{i}", 200, actor))
    trail._drain()
    before = audit_events(store)
    expand = trail.expand

    def expand_then_a_request_comes(*args: Any, **kwargs: Any) -> bool:
        more = expand(*args, **kwargs)
        trail._requests += 1
        return more

    trail.expand = expand_then_a_request_comes  # type: ignore[method-assign]
    assert trail._expand_while_idle(trail._requests) is True
    assert audit_events(store) - before == audit.ROW_EVENTS  # one row, then it yielded
    trail.expand = expand  # type: ignore[method-assign]
    assert trail._expand_while_idle(trail._requests) is False  # idle: the rest
    assert audit_events(store) - before == 3 * audit.ROW_EVENTS
    assert count(store, audit_pending) == 0


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "reads"),
    [
        ("GET", "Observation/1", "", b"", False),
        ("GET", "Observation", "code=x", b"", False),
        ("POST", "Observation", "", b"{}", False),
        ("PUT", "Patient/1", "", b"{}", False),
        ("GET", "AuditEvent", "entity=Patient/1", b"", True),
        ("GET", "AuditEvent/abc", "", b"", True),
        ("POST", "AuditEvent/_search", "", b"", True),
        ("GET", "Patient", "_revinclude=AuditEvent:entity", b"", True),
        ("GET", "Patient", "_has:AuditEvent:entity:agent=x", b"", True),
        ("GET", "", "_type=AuditEvent", b"", True),
        ("GET", "_history", "", b"", True),
        ("GET", "Patient/1/$everything", "", b"", True),
        ("GET", "Patient/1/AuditEvent", "", b"", True),
        ("GET", "Patient/1/Observation", "", b"", True),
        ("GET", "$export", "", b"", True),
        ("POST", "", "", b'{"entry":[{"request":{"url":"AuditEvent?x=1"}}]}', True),
        ("POST", "", "", b'{"resourceType":"Bundle","type":"transaction"}', False),
        ("DELETE", "AuditEvent", "entity=Patient/1", b"", True),
    ],
)
def test_which_requests_see_audit_events(
    method: str, path: str, query: str, body: bytes, reads: bool
) -> None:
    parts = [p for p in path.split("/") if p]
    assert may_read_audit_events(method, parts, query, body) is reads


@pytest.mark.parametrize(
    "actor",
    [
        None,
        Actor(),
        Actor("u1", "Practitioner/d1", "app", "p1", "10.0.0.2"),
        Actor.of_channel("hl7", "LAB^HOSPITAL"),
    ],
)
def test_a_pending_row_keeps_every_field_of_the_event(actor: Actor | None) -> None:
    event = Interaction("GET", "search-type", "Observation", None, 200, actor)
    recorded, text = audit._pack([(123, event), (124, event)])
    assert recorded == 123 and audit._unpack(recorded, text) == [(123, event), (124, event)]


def test_a_pending_row_of_one_event_as_first_written_still_expands() -> None:
    actor = Actor("u1", "Practitioner/d1", "app", "p1", "10.0.0.2")
    text = (
        '["GET","read","Patient","p1",200,["u1","Practitioner/d1","app","p1","10.0.0.2",null,null]]'
    )
    event = Interaction("GET", "read", "Patient", "p1", 200, actor)
    assert audit._unpack(123, text) == [(123, event)]
