"""`$validate` goes through the access policy like every operation: the caller needs read on
the type (type level) or on the resource (instance level); it never reveals a resource the
caller may not read, and it stores nothing."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

from typing import Any

from profile_support import BASE, constraint, element, slicing, validate_against
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

OBS = {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}}


def test_anonymous_caller_cannot_validate(http: TestClient) -> None:
    response = http.post("/fhir/Observation/$validate", json=OBS)
    assert is_outcome(response, 401)


def test_scope_without_the_type_cannot_validate_it(http: TestClient, smart: Any) -> None:
    patients_only, _, _ = backend(smart, "system/Patient.rs")
    response = http.post("/fhir/Observation/$validate", json=OBS, headers=patients_only)
    assert is_outcome(response, 403)
    allowed, _, _ = backend(smart, "system/Observation.rs")
    response = http.post("/fhir/Observation/$validate", json=OBS, headers=allowed)
    assert response.status_code == 200
    assert any(i["severity"] == "error" for i in response.json()["issue"])


def test_patient_app_cannot_validate_another_patients_resource(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    app = patient_app(smart, two_patients["A"])
    own = http.get(f"/fhir/Patient/{two_patients['A']}/$validate", headers=app)
    assert own.status_code == 200, own.text
    other = http.get(f"/fhir/Patient/{two_patients['B']}/$validate", headers=app)
    assert other.status_code in (403, 404) and other.json()["resourceType"] == "OperationOutcome"
    assert "PatientB" not in other.text


def test_resolve_sees_only_what_the_caller_may_read(http: TestClient, smart: Any) -> None:
    """A slicing discriminator through resolve() reads the referenced resource as the caller
    may: one it may not read is absent (not judged, a warning), so neither `$validate` nor a
    refused write tells it what that resource is."""
    admin, _, _ = backend(smart, "system/*.cruds")
    profile = constraint("performer-doctor", "Observation", [
        slicing("Observation.performer", "type", "resolve()"),
        element("Observation.performer:doctor", min=1, max="1",
                type=[{"code": "Reference", "targetProfile": [BASE + "Practitioner"]}]),
    ])  # fmt: skip
    for resource in (profile, {"resourceType": "Organization", "id": "hidden-org", "name": "X"}):
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert http.put(url, json=resource, headers=admin).status_code in (200, 201)
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "performer": [{"reference": "Organization/hidden-org"}]}  # fmt: skip
    narrow, _, _ = backend(smart, "system/Observation.cruds")
    wide, _, _ = backend(smart, "system/Observation.cruds system/Organization.rs")
    seen = validate_against(http, profile["url"], obs, narrow)
    assert not [i for i in seen if i["severity"] == "error"], seen
    assert any("is not judged" in i["diagnostics"] for i in seen if i["severity"] == "warning")
    seen = validate_against(http, profile["url"], obs, wide)
    assert any("slice 'doctor' needs at least 1" in i["diagnostics"] for i in seen), seen
    claimed = {**obs, "meta": {"profile": [profile["url"]]}}
    assert http.post("/fhir/Observation", json=claimed, headers=narrow).status_code == 201
    refused = http.post("/fhir/Observation", json=claimed, headers=wide)
    assert refused.status_code == 400 and "slice 'doctor'" in refused.text
