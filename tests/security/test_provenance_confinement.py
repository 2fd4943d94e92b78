"""A patient-confined app reads the Provenance of its patient's record (who made a report:
the AI model, the lab feed, the reviewer), and no Provenance that touches another patient's.

R4's compartment places a Provenance by its Patient targets only; the access policy also opens
a Provenance whose targets are all the patient's (or shared resources such as a Device), so
`Provenance?target=DiagnosticReport/x` and `_revinclude=Provenance:target` answer a patient
app as they answer a clinician, while a Provenance about patient B stays invisible to A."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

from typing import Any

from side_support import (  # noqa: F401 - fixtures are used by name
    backend,
    http,
    is_outcome,
    patient_app,
    side_app,
    side_session_app,
    smart,
    two_patients,
)
from starlette.testclient import TestClient


def _provenance(pid: str, *targets: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "id": pid,
        "target": [{"reference": t} for t in targets],
        "recorded": "2026-12-03T10:00:00Z",
        "agent": [{"who": {"reference": "Device/model"}}],
    }


def test_confined_app_reads_its_records_provenance_only(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    a, b = two_patients["A"], two_patients["B"]
    admin, _, _ = backend(smart, "system/*.cruds")

    def put(resource: dict[str, Any]) -> None:
        path = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = http.put(path, json=resource, headers=admin)
        assert response.status_code in (200, 201), response.text

    put({"resourceType": "Device", "id": "model"})
    for who in ("a", "b"):
        patient = a if who == "a" else b
        put({"resourceType": "DiagnosticReport", "id": f"{who}-report", "status": "preliminary",
             "code": {"text": "AI"}, "subject": {"reference": f"Patient/{patient}"}})  # fmt: skip
        put({"resourceType": "Observation", "id": f"{who}-finding", "status": "preliminary",
             "code": {"text": "finding"},
             "subject": {"reference": f"Patient/{patient}"}})  # fmt: skip
    # the AI worker's shape: report + finding (+ the shared Device), no Patient target
    put(_provenance("a-ai", "DiagnosticReport/a-report", "Observation/a-finding", "Device/model"))
    put(_provenance("b-ai", "DiagnosticReport/b-report", "Observation/b-finding"))
    # one record about both patients' resources: not A's alone, so not A's to read
    put(_provenance("mixed", "DiagnosticReport/a-report", "DiagnosticReport/b-report"))
    # only shared resources: nobody's record
    put(_provenance("shared", "Device/model"))
    # a dangling target (no such report) proves nothing about the patient
    put(_provenance("dangling", "DiagnosticReport/a-report", "DiagnosticReport/missing"))
    # the R4 compartment's own rule still holds: a Patient target
    put(_provenance("a-direct", f"Patient/{a}"))

    app = patient_app(smart, a)

    def ids(response: Any) -> set[str]:
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}

    assert ids(http.get("/fhir/Provenance", headers=app)) == {"a-ai", "a-direct"}
    assert ids(
        http.get("/fhir/Provenance", params={"target": "DiagnosticReport/a-report"}, headers=app)
    ) == {"a-ai"}
    assert (
        ids(
            http.get(
                "/fhir/Provenance", params={"target": "DiagnosticReport/b-report"}, headers=app
            )
        )
        == set()
    )
    # the unconfined view of the same search: the filter is the policy, not the data
    assert ids(
        http.get("/fhir/Provenance", params={"target": "DiagnosticReport/a-report"}, headers=admin)
    ) == {"a-ai", "mixed", "dangling"}
    reports = http.get(
        "/fhir/DiagnosticReport",
        params={"_revinclude": "Provenance:target"},
        headers=app,
    )
    assert ids(reports) == {"a-report", "a-ai"}

    assert http.get("/fhir/Provenance/a-ai", headers=app).status_code == 200
    for hidden in ("b-ai", "mixed", "shared", "dangling"):
        assert is_outcome(http.get(f"/fhir/Provenance/{hidden}", headers=app), 403), hidden
    # reading is not writing: the patient app may not forge the record about its report
    forged = _provenance("a-forged", "DiagnosticReport/a-report")
    write_app = patient_app(smart, a, "patient/*.cruds")
    assert is_outcome(http.put("/fhir/Provenance/a-forged", json=forged, headers=write_app), 403)
    assert is_outcome(
        http.put("/fhir/Provenance/a-ai", json=_provenance("a-ai", f"Patient/{a}"),
                 headers=write_app), 403)  # fmt: skip


def test_confined_view_follows_the_target_after_it_moves(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    """Visibility is judged from the targets as they stand: a report reassigned to B takes
    its Provenance out of A's view."""
    a, b = two_patients["A"], two_patients["B"]
    admin, _, _ = backend(smart, "system/*.cruds")
    report = {"resourceType": "DiagnosticReport", "id": "moving", "status": "final",
              "code": {"text": "x"}, "subject": {"reference": f"Patient/{a}"}}  # fmt: skip
    assert http.put("/fhir/DiagnosticReport/moving", json=report, headers=admin).is_success
    prov = _provenance("moving-prov", "DiagnosticReport/moving")
    assert http.put("/fhir/Provenance/moving-prov", json=prov, headers=admin).is_success
    app = patient_app(smart, a)
    assert http.get("/fhir/Provenance/moving-prov", headers=app).status_code == 200
    report["subject"] = {"reference": f"Patient/{b}"}
    assert http.put("/fhir/DiagnosticReport/moving", json=report, headers=admin).is_success
    assert is_outcome(http.get("/fhir/Provenance/moving-prov", headers=app), 403)
    assert http.get("/fhir/Provenance/moving-prov", headers=patient_app(smart, b)).is_success
