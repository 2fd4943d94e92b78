"""Read-through refresh: reading a stale OpenEMR Patient re-reads it from OpenEMR first."""

from __future__ import annotations

from typing import Any

import pytest
from simulator import OpenEmrSimulator
from sqlalchemy import update
from starlette.testclient import TestClient

from openemr_bridge.models import records
from openemr_bridge.routes import build_syncer


@pytest.fixture
def http(bridge_http: Any) -> TestClient:
    return bridge_http(openemr_refresh_age=60)  # type: ignore[no-any-return]


def age(client: TestClient, seconds: int) -> None:
    with client.app.state.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(update(records).values(synced=records.c.synced - seconds))


def sync_one(client: TestClient, uuid: str) -> str:
    syncer = build_syncer(client.app.state.runtime.openemr_settings(), client.app.state.context)  # type: ignore[attr-defined]
    assert syncer is not None
    _, patient_id = syncer.sync_patient(uuid)
    assert patient_id
    return patient_id


def test_stale_patient_is_refreshed_on_read(http: TestClient, sim: OpenEmrSimulator) -> None:
    row = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    patient_id = sync_one(http, row["uuid"])
    sim.patients[row["uuid"]]["lname"] = "Tran"
    fresh: Any = http.get(f"/fhir/Patient/{patient_id}").json()
    assert fresh["name"][0]["family"] == "Nguyen"  # synced moments ago: served as stored
    age(http, 120)
    refreshed = http.get(f"/fhir/Patient/{patient_id}").json()
    assert refreshed["name"][0]["family"] == "Tran"
    assert refreshed["meta"]["versionId"] == "2"


def test_unchanged_refresh_writes_nothing_and_openemr_down_serves_stored(
    http: TestClient, sim: OpenEmrSimulator
) -> None:
    row = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    patient_id = sync_one(http, row["uuid"])
    age(http, 120)
    assert http.get(f"/fhir/Patient/{patient_id}").json()["meta"]["versionId"] == "1"
    age(http, 120)
    sim.fail_next = [503] * 50
    resp = http.get(f"/fhir/Patient/{patient_id}")
    assert resp.status_code == 200
    assert resp.json()["name"][0]["family"] == "Nguyen"


def test_patients_from_elsewhere_are_not_touched(http: TestClient, sim: OpenEmrSimulator) -> None:
    created = http.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
    before = len(sim.log)
    assert http.get(f"/fhir/Patient/{created['id']}").status_code == 200
    assert len(sim.log) == before
