"""AuditEvents: every interaction and refusal leaves a searchable trace."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_server.search.extract import extract
from fhir_server.store.audit import Actor, Interaction, audit_event, audit_index
from fhir_server.validation import validate_resource
from smart_auth.agent import actor_for
from smart_auth.policy import Grant


def events(http: TestClient, auth: dict[str, str], query: str) -> list[dict[str, Any]]:
    bundle = http.get(f"/fhir/AuditEvent?{query}&_count=100", headers=auth).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_reads_writes_and_refusals_are_audited(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    writer = {"Authorization": f"Bearer {smart.backend_token('system/Patient.cr')}"}
    created = http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=writer)
    pid = created.json()["id"]
    assert http.get(f"/fhir/Patient/{pid}", headers=writer).status_code == 200
    assert http.delete(f"/fhir/Patient/{pid}", headers=writer).status_code == 403
    assert http.get(f"/fhir/Patient/{pid}").status_code == 401
    auth_app.state.audit.flush()
    auditor = {"Authorization": f"Bearer {smart.backend_token('system/AuditEvent.rs')}"}
    found = events(http, auditor, f"entity=Patient/{pid}")
    by_action = {(e["subtype"][0]["code"], e["outcome"]) for e in found}
    assert ("create", "0") in by_action
    assert ("read", "0") in by_action
    assert ("delete", "4") in by_action
    anonymous = [e for e in found if e["agent"][0]["who"].get("display") == "anonymous"]
    assert anonymous and anonymous[0]["outcome"] == "4"
    with_client = [e for e in found if len(e["agent"]) > 1]
    assert with_client[0]["agent"][1]["who"]["identifier"]["value"]
    assert all(e["agent"][0]["network"]["address"] for e in found)


def test_a_change_and_its_event_commit_together(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {smart.backend_token('system/*.cruds')}"}
    post = {"method": "POST", "url": "Patient"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "gender": "female"}, "request": post},
            {"resource": {"resourceType": "Patient", "gender": "male"}, "request": post},
        ],
    }
    done = http.post("/fhir", json=bundle, headers=admin)
    assert done.status_code == 200
    ids = [
        e["response"]["location"].split("/_history")[0].rsplit("/", 1)[1]
        for e in done.json()["entry"]
    ]
    # no flush: the event was committed with the change, not queued after it
    (event,) = events(http, admin, "subtype=transaction&outcome=0")
    assert {e["what"]["reference"] for e in event["entity"]} == {f"Patient/{i}" for i in ids}
    bundle["entry"].append(
        {"resource": {"resourceType": "Patient", "birthDate": "not a date"}, "request": post}
    )
    failed = http.post("/fhir", json=bundle, headers=admin)
    assert failed.status_code == 400
    assert len(events(http, admin, "subtype=transaction&outcome=0")) == 1  # nothing new applied
    (refusal,) = events(http, admin, "subtype=transaction&outcome=4")
    assert "entity" not in refusal  # the rolled-back resources never existed
    single = http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin)
    pid = single.json()["id"]
    (created,) = events(http, admin, f"entity=Patient/{pid}&subtype=create")
    assert created["outcome"] == "0"


def test_patient_context_is_recorded(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {smart.backend_token('system/*.cruds')}"}
    pid = http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
    client_id, _ = smart.client("launch/patient patient/*.rs")
    smart.user()
    body = smart.code_flow(client_id, "launch/patient patient/*.rs", _patient=pid)
    http.get("/fhir/Observation", headers={"Authorization": f"Bearer {body['access_token']}"})
    auth_app.state.audit.flush()
    found = events(http, admin, f"patient=Patient/{pid}&subtype=search-type")
    assert found and found[0]["agent"][0]["who"]["reference"] == "Practitioner/p1"


@pytest.mark.parametrize(
    "grant",
    [
        None,
        Grant("svc", client_id="backend"),
        Grant("u1", client_id="app", patient="p1", fhir_user="Practitioner/d1", role="physician"),
    ],
)
@pytest.mark.parametrize(
    ("method", "interaction", "res_type", "res_id", "status"),
    [
        ("GET", "read", "Observation", "o1", 200),
        ("GET", "search-type", "Observation", None, 200),
        ("POST", "create", "Patient", "p2", 201),
        ("GET", "read", "Patient", "p1", 403),
        ("GET", "unknown", "", None, 401),
    ],
)
def test_every_audit_event_shape_is_a_valid_resource(
    grant: Grant | None,
    method: str,
    interaction: str,
    res_type: str,
    res_id: str | None,
    status: int,
) -> None:
    """Audit events are stored without per-event validation (trusted), so every shape the
    builder produces is validated here against the FHIR R4 model instead."""
    actors = [actor_for(grant, "127.0.0.1"), Actor.of_channel("hl7", "LAB^HOSPITAL")]
    for actor in actors:
        event = Interaction(method, interaction, res_type, res_id, status, actor)
        for touched in ([], ["Patient/a", "Observation/b"]):
            _check_shape(audit_event(event, "2026-01-01T00:00:00.123456Z", touched))


def _check_shape(resource: dict[str, Any]) -> None:
    validate_resource(resource)
    # the ready-made index rows are exactly what the generic extraction finds
    fast, generic = audit_index(resource), extract(resource, "http://testserver/fhir")
    for kind in ("strings", "tokens", "dates", "references", "uris", "numbers"):
        assert sorted(getattr(fast, kind), key=repr) == sorted(getattr(generic, kind), key=repr), (
            kind
        )
