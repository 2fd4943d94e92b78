"""Patient/$everything follows references one level, but only to what the grant may see: a
token confined to patient A gets the Practitioner A's record points to, never patient B or
B's resources, even when A's record references them."""

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


def test_confined_everything_does_not_reach_another_patient(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    a, b = two_patients["A"], two_patients["B"]
    admin, _, _ = backend(smart, "system/*.cruds")

    def put(resource: dict[str, Any]) -> None:
        path = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert http.put(path, json=resource, headers=admin).status_code in (200, 201)

    put({"resourceType": "Practitioner", "id": "doc"})
    put({"resourceType": "Observation", "id": "b-obs", "status": "final", "code": {"text": "b"},
         "subject": {"reference": f"Patient/{b}"}})  # fmt: skip
    # A's record points at the doctor, at patient B and at B's Observation
    put({"resourceType": "Observation", "id": "a-obs", "status": "final", "code": {"text": "a"},
         "subject": {"reference": f"Patient/{a}"},
         "performer": [{"reference": "Practitioner/doc"}, {"reference": f"Patient/{b}"}],
         "hasMember": [{"reference": "Observation/b-obs"}]})  # fmt: skip

    def everything(headers: dict[str, str]) -> set[str]:
        response = http.get(f"/fhir/Patient/{a}/$everything", headers=headers)
        assert response.status_code == 200, response.text
        return {
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", [])
            if e["resource"]["resourceType"] != "AuditEvent"  # the trail of A's own record
        }

    unconfined = everything(admin)
    assert {f"Patient/{b}", "Observation/b-obs", "Practitioner/doc"} <= unconfined
    confined = everything(patient_app(smart, a))
    assert confined == {f"Patient/{a}", "Observation/a-obs", "Practitioner/doc"}
    # and B's own everything stays closed to A's app
    assert is_outcome(http.get(f"/fhir/Patient/{b}/$everything",
                               headers=patient_app(smart, a)), 403)  # fmt: skip
