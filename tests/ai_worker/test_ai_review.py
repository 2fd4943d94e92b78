"""Review of AI reports: $approve / $reject by a physician or radiologist, with Provenance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ai_support import ai_settings, clear_tables
from starlette.testclient import TestClient

from fhir_server.api.bundles import apply_transaction
from mappers.ai import Coding, Findings, Measurement, ModelInfo, result_bundle
from mappers.ai.tasks import task_resource

MODEL = ModelInfo("ct-classical", "1.0.0", "interop-server", "test model")


def make_report(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A preliminary AI report written as the worker writes it (through the write path)."""
    headers = headers or {}
    patient = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{patient.json()['id']}"},
    }
    study = client.post("/fhir/ImagingStudy", json=study, headers=headers).json()
    task = task_resource(study, MODEL, "2026-01-01T00:00:00Z")
    task["status"] = "in-progress"  # already running: the AI trigger leaves it alone
    task = client.post("/fhir/Task", json=task, headers=headers).json()
    findings = Findings(
        measurements=[Measurement(Coding("urn:interop:ai", "fat-volume", "fat"), 12.5, "mL")],
        impression="Non-diagnostic.",
    )
    bundle = result_bundle(task, study, MODEL, findings, "2026-01-01T00:01:00Z")
    apply_transaction(client.app.state.context, bundle)  # type: ignore[attr-defined]
    reports = client.get(
        "/fhir/DiagnosticReport", params={"study": f"ImagingStudy/{study['id']}"}, headers=headers
    ).json()
    report: dict[str, Any] = reports["entry"][0]["resource"]
    return report


def params(**values: Any) -> dict[str, Any]:
    out = []
    for name, value in values.items():
        key = "valueReference" if isinstance(value, dict) else "valueString"
        out.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": out}


def test_approve_makes_report_and_observations_final(ai_client) -> None:  # type: ignore[no-untyped-def]
    report = make_report(ai_client)
    assert report["status"] == "preliminary"
    body = params(reviewer={"reference": "Practitioner/dr-x"})
    response = ai_client.post(f"/fhir/DiagnosticReport/{report['id']}/$approve", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "final"
    obs = ai_client.get(f"/fhir/{report['result'][0]['reference']}").json()
    assert obs["status"] == "final"
    prov = ai_client.get(
        "/fhir/Provenance",
        params={"target": f"DiagnosticReport/{report['id']}", "agent": "Practitioner/dr-x"},
    ).json()
    assert prov["total"] == 1
    agent = prov["entry"][0]["resource"]["agent"][0]
    assert agent["type"]["coding"][0]["code"] == "verifier"
    again = ai_client.post(f"/fhir/DiagnosticReport/{report['id']}/$approve", json=body)
    assert again.status_code == 409  # only a preliminary report can be reviewed


def test_reject_needs_a_reason_and_records_it(ai_client) -> None:  # type: ignore[no-untyped-def]
    report = make_report(ai_client)
    url = f"/fhir/DiagnosticReport/{report['id']}/$reject"
    assert ai_client.post(url, json=params()).status_code == 400
    response = ai_client.post(url, json=params(reason="motion artefact, wrong region"))
    assert response.status_code == 200, response.text
    rejected = response.json()
    assert rejected["status"] == "entered-in-error"
    assert rejected["extension"][0]["valueString"] == "motion artefact, wrong region"
    obs = ai_client.get(f"/fhir/{report['result'][0]['reference']}").json()
    assert obs["status"] == "entered-in-error"
    prov = ai_client.get(
        "/fhir/Provenance", params={"target": f"DiagnosticReport/{report['id']}"}
    ).json()
    reasons = [e["resource"].get("reason") for e in prov["entry"]]
    assert [{"text": "motion artefact, wrong region"}] in reasons


def test_get_is_not_allowed_on_review(ai_client) -> None:  # type: ignore[no-untyped-def]
    report = make_report(ai_client)
    assert ai_client.get(f"/fhir/DiagnosticReport/{report['id']}/$approve").status_code == 405


@pytest.fixture(scope="session")
def auth_ai_app(database_url: str, orthanc):  # type: ignore[no-untyped-def]
    from interop.app import create_app

    app = create_app(ai_settings(database_url, orthanc, auth="on"))  # audit trail on
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def auth_client(auth_ai_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    clear_tables(auth_ai_app)
    with TestClient(auth_ai_app, base_url="http://testserver") as client:
        yield client


def bearer(app, role: str | None, scope: str, fhir_user: str | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    context = {"role": role, "fhirUser": fhir_user}
    token = app.state.auth.tokens.access_token(
        client_id="test-client", subject=f"user-{role}", scope=scope, lifetime=300, context=context
    )
    return {"authorization": f"Bearer {token}"}


def test_only_physicians_and_radiologists_review(auth_client) -> None:  # type: ignore[no-untyped-def]
    app = auth_client.app
    admin = bearer(app, "admin", "user/*.cruds", "Practitioner/admin")
    report = make_report(auth_client, admin)
    url = f"/fhir/DiagnosticReport/{report['id']}/$approve"
    nurse = bearer(app, "nurse", "user/*.rs user/DiagnosticReport.u", "Practitioner/n1")
    assert auth_client.post(url, json=params(), headers=nurse).status_code == 403
    backend = bearer(app, None, "system/*.cruds")
    assert auth_client.post(url, json=params(), headers=backend).status_code == 403
    radiologist = bearer(app, "radiologist", "user/*.rs user/DiagnosticReport.u", "Practitioner/r1")
    response = auth_client.post(url, json=params(), headers=radiologist)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "final"
    prov = auth_client.get(
        "/fhir/Provenance",
        params={"target": f"DiagnosticReport/{report['id']}", "agent": "Practitioner/r1"},
        headers=admin,
    ).json()
    assert prov["total"] == 1
    audit = auth_client.get(
        "/fhir/AuditEvent", params={"entity": f"DiagnosticReport/{report['id']}"}, headers=admin
    ).json()
    assert audit["total"] >= 1  # the review is in the audit trail too


def test_capability_statement_lists_the_ai_operations(ai_client) -> None:  # type: ignore[no-untyped-def]
    statement = ai_client.get("/fhir/metadata").json()
    ops = {  # every type also has $validate (fhir_server.api.validate)
        r["type"]: [o["name"] for o in r.get("operation", []) if o["name"] != "validate"]
        for r in statement["rest"][0]["resource"]
    }
    assert ops["ImagingStudy"] == ["analyze"]
    assert ops["DiagnosticReport"] == ["approve", "reject"]
    assert "everything" in ops["Patient"]  # the operations already there are kept
