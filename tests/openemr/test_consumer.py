"""The outbox consumer "openemr-push" inside the running app: new Patients reach OpenEMR."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from simulator import OpenEmrSimulator
from starlette.testclient import TestClient

from openemr_bridge.routes import build_syncer

UUID_SYSTEM = "urn:openemr:default:uuid"


def wait_for(check: Callable[[], Any], seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def linked(http: TestClient, patient_id: str) -> str | None:
    patient = http.get(f"/fhir/Patient/{patient_id}").json()
    return next(
        (i["value"] for i in patient.get("identifier", []) if i["system"] == UUID_SYSTEM), None
    )


def test_new_patient_is_created_in_openemr_after_commit(
    bridge_http: Any, sim: OpenEmrSimulator
) -> None:
    http = bridge_http()
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "H9"}],
        "name": [{"family": "Okafor", "given": ["Ada"]}],
        "birthDate": "1990-05-06",
        "gender": "female",
    }
    created = http.post("/fhir/Patient", json=body).json()
    uuid = wait_for(lambda: linked(http, created["id"]))
    assert sim.patients[uuid]["pubpid"] == "H9" and sim.patients[uuid]["sex"] == "Female"
    time.sleep(1.5)  # the consumer also saw its own update: nothing more is created
    assert len(sim.patients) == 1


def test_patient_with_missing_data_is_tagged(bridge_http: Any, sim: OpenEmrSimulator) -> None:
    http = bridge_http()
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "H10"}],
        "name": [{"given": ["Ada"]}],
        "birthDate": "1990-05-06",
    }
    created = http.post("/fhir/Patient", json=body).json()
    tag = "urn:interop:openemr-pending|missing-family-name"
    wait_for(lambda: http.get("/fhir/Patient", params={"_tag": tag}).json()["total"] == 1)
    assert sim.patients == {}
    assert created["id"]


def test_patients_from_openemr_are_not_sent_back(bridge_http: Any, sim: OpenEmrSimulator) -> None:
    http = bridge_http()
    sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    syncer = build_syncer(http.app.state.runtime.openemr_settings(), http.app.state.context)  # type: ignore[attr-defined]
    assert syncer is not None and syncer.run().created == 1
    time.sleep(1.5)
    assert len(sim.patients) == 1
    assert not [p for m, p in sim.log if m == "POST" and p.endswith("/api/patient")]


def test_openemr_down_is_retried_until_it_answers(bridge_http: Any, sim: OpenEmrSimulator) -> None:
    http = bridge_http(openemr_retries=0)
    sim.fail_next = [503] * 3
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "H11"}],
        "name": [{"family": "Okafor", "given": ["Ada"]}],
        "birthDate": "1990-05-06",
    }
    created = http.post("/fhir/Patient", json=body).json()
    assert wait_for(lambda: linked(http, created["id"]))
    assert sim.fail_next == []
