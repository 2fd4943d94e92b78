"""A scope's query restriction means the same to the write check as to the search.

`\\,` and `\\|` are FHIR search escapes (R4 §3.1.1.4.7): `code=a\\,b` asks for the code `a,b`,
not for `a\\` or `b`. The SMART write check (content judged in memory) once split such values
differently from the search (SQL), so a token could write what it could not then see, and be
refused what it could see.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

FHIR = {"Content-Type": "application/fhir+json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **FHIR}


def observation(patient_id: str, **coding: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


@pytest.fixture
def patient(http: TestClient, smart) -> str:  # type: ignore[no-untyped-def]
    admin = bearer(smart.backend_token("system/*.cruds"))
    body = {"resourceType": "Patient", "name": [{"family": "Escape"}]}
    return str(http.post("/fhir/Patient", json=body, headers=admin).json()["id"])


def patient_token(smart, patient: str, scope: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("launch/patient " + scope)
    smart.user()
    body = smart.code_flow(client_id, "launch/patient " + scope, _patient=patient)
    return bearer(body["access_token"])


def visible(http: TestClient, auth: dict[str, str]) -> set[str]:
    bundle = http.get("/fhir/Observation", headers=auth).json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"].get("id")}


@pytest.mark.parametrize(
    ("restriction", "inside", "outside"),
    [
        # an escaped comma is part of the code, not a second alternative `b`
        ("code=a\\,b", {"code": "a,b"}, {"code": "b"}),
        # an escaped bar is part of the code, not a system `a` and a code `b`
        ("code=a\\|b", {"code": "a|b"}, {"system": "a", "code": "b"}),
        # an escaped backslash before a real separator: system `s\`, code `c`
        ("code=s\\\\|c", {"system": "s\\", "code": "c"}, {"code": "s\\|c"}),
    ],
)
def test_escaped_restriction_cannot_admit_writes_the_search_hides(
    http: TestClient,
    smart: Any,
    patient: str,
    restriction: str,
    inside: dict[str, str],
    outside: dict[str, str],
) -> None:
    auth = patient_token(smart, patient, f"patient/Observation.crus?{restriction}")
    created = http.post("/fhir/Observation", json=observation(patient, **inside), headers=auth)
    assert created.status_code == 201, created.text
    refused = http.post("/fhir/Observation", json=observation(patient, **outside), headers=auth)
    assert refused.status_code == 403, refused.text
    assert visible(http, auth) == {created.json()["id"]}
