"""The store's one write path: typed results, the caller's Bundle left alone, conditional
creates identity-locked over REST too, conditional references answered per transaction."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_server.errors import FhirError


def _patient_bundle(mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b7e8a52-1111-4c1e-9a53-5c2c0f7d0001",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:mrn", "value": mrn}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier=urn:mrn|{mrn}",
                },
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": "urn:uuid:0b7e8a52-1111-4c1e-9a53-5c2c0f7d0001"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def test_apply_returns_typed_results_and_leaves_the_bundle_alone(app: Any) -> None:
    bundle = _patient_bundle("typed-1")
    before = copy.deepcopy(bundle)
    patient, observation = app.state.store.apply(bundle)
    assert bundle == before  # ids and references were resolved on the store's own copy
    assert (patient.res_type, patient.outcome, patient.version, patient.status) == (
        "Patient",
        "created",
        1,
        201,
    )
    assert observation.outcome == "created"
    stored = observation.stored.json()
    assert stored["subject"]["reference"] == f"Patient/{patient.res_id}"
    again, _ = app.state.store.apply(bundle)  # the conditional create finds the Patient
    assert (again.outcome, again.res_id, again.status) == ("matched", patient.res_id, 200)


def test_a_failing_entry_writes_nothing(app: Any) -> None:
    bundle = _patient_bundle("atomic-1")
    bundle["entry"][1]["resource"]["effectiveDateTime"] = "not a date"
    with pytest.raises(FhirError) as failure:
        app.state.store.apply(bundle)
    assert failure.value.status == 400
    assert "Bundle.entry[1]" in failure.value.diagnostics
    with TestClient(app) as client:
        found = client.get("/fhir/Patient", params={"identifier": "urn:mrn|atomic-1"}).json()
    assert found["total"] == 0


def test_concurrent_rest_conditional_creates_make_one_resource(client: TestClient) -> None:
    """Eight clients `POST Patient` with the same If-None-Exist at once: one Patient, one
    201, the rest 200 naming it (the REST create takes the same identity lock as Bundles)."""

    def create(i: int) -> tuple[int, str]:
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:lock", "value": "1"}]}
        headers = {"If-None-Exist": "identifier=urn:lock|1"}
        response = client.post("/fhir/Patient", json=body, headers=headers)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(16)))
    assert sorted(status for status, _ in results).count(201) == 1
    assert {status for status, _ in results} == {200, 201}
    assert len({pid for _, pid in results}) == 1
    found = client.get("/fhir/Patient", params={"identifier": "urn:lock|1"}).json()
    assert found["total"] == 1


def test_repeated_conditional_references_resolve_to_their_one_match(client: TestClient) -> None:
    """Many entries naming one Practitioner by identifier all point at it; a reference whose
    match a same-transaction write changes is answered afresh (two matches: refused)."""
    npi = {"system": "http://hl7.org/fhir/sid/us-npi", "value": "999"}
    pract = client.post("/fhir/Practitioner", json={"resourceType": "Practitioner",
                                                    "identifier": [npi]}).json()  # fmt: skip
    ref = {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999"}
    entries = [
        {
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "participant": [{"individual": dict(ref)}],
            },
            "request": {"method": "POST", "url": "Encounter"},
        }
        for _ in range(20)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    done = client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert done.status_code == 200, done.text
    individuals = {
        e["resource"]["participant"][0]["individual"]["reference"] for e in done.json()["entry"]
    }
    assert individuals == {f"Practitioner/{pract['id']}"}
    # a second Practitioner with the same NPI, created in the same transaction before the
    # references are resolved, makes them ambiguous: 412, not the stale single answer
    twin = {
        "resource": {"resourceType": "Practitioner", "identifier": [npi]},
        "request": {"method": "POST", "url": "Practitioner"},
    }
    ambiguous = {"resourceType": "Bundle", "type": "transaction", "entry": [twin, *entries[:2]]}
    refused = client.post("/fhir", json=ambiguous)
    assert refused.status_code == 412, refused.text
