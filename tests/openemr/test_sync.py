"""OpenEMR sync: the simulator -> the canonical store, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from simulator import OpenEmrSimulator
from starlette.testclient import TestClient

from fhir_server.api.bundles import apply_transaction
from mappers.openemr import Systems
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.errors import OpenEmrUnavailable
from openemr_bridge.source import ApiSource
from openemr_bridge.sync import Syncer

SYSTEMS = Systems.for_site("default")


def populate(sim: OpenEmrSimulator, count: int = 3) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        row = sim.add_patient(fname=f"Ann{i}", lname=f"Lee{i}", DOB="1980-01-02", sex="Female",
                              pubpid=f"MRN{i}")  # fmt: skip
        enc = sim.add_encounter(row, reason="Checkup")
        sim.add_vitals(enc, weight="150.5", height="65", bps="120", bpd="80")
        sim.add_list(row, "medical_problem", title="Hypertension", diagnosis="ICD10:I10")
        sim.add_list(row, "allergy", title="Ampicillin", diagnosis="RXCUI:7980", reaction="hives")
        sim.add_list(row, "medication", title="Norvasc")
        sim.add_prescription(row, drug="Lisinopril", rxnorm_drugcode="314076")
        rows.append(row)
    return rows


def count(client: TestClient, path: str) -> int:
    return int(client.get(f"/fhir/{path}", params={"_summary": "count"}).json()["total"])


def syncer(client: TestClient, oe: OpenEmrClient, page_size: int = 2) -> Syncer:
    return Syncer(client.app.state.context, ApiSource(oe), SYSTEMS, page_size)  # type: ignore[attr-defined]


def test_sync_creates_everything_then_nothing_changes(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    rows = populate(sim)
    summary = syncer(client, oe).run()
    assert summary.as_json() == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 0,
        "reasons": {},
    }
    assert count(client, "Patient") == 3
    assert count(client, "Encounter") == 3
    assert count(client, "Observation") == 9  # weight, height, BP panel
    assert count(client, "Condition") == 3
    assert count(client, "AllergyIntolerance") == 3
    assert count(client, "MedicationRequest") == 6  # medication list + prescription
    found = client.get(
        "/fhir/Patient", params={"identifier": f"urn:openemr:default:uuid|{rows[1]['uuid']}"}
    )
    patient = found.json()["entry"][0]["resource"]
    assert patient["name"][0]["family"] == "Lee1"
    obs = client.get("/fhir/Observation", params={"code": "http://loinc.org|29463-7"}).json()
    assert obs["entry"][0]["resource"]["valueQuantity"]["code"] == "[lb_av]"
    again = syncer(client, oe).run()
    assert (again.unchanged, again.created, again.updated) == (3, 0, 0)
    full = syncer(client, oe).run(full=True)
    assert (full.unchanged, full.created, full.updated) == (3, 0, 0)
    history = client.get(f"/fhir/Patient/{patient['id']}/_history").json()
    assert history["total"] == 1  # unchanged records produce no new version
    assert client.get("/fhir/Observation/_history").json()["total"] == 9


def test_changed_patient_is_updated(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    rows = populate(sim)
    syncer(client, oe).run()
    sim.patients[rows[0]["uuid"]]["lname"] = "Smith"
    summary = syncer(client, oe).run()
    assert (summary.updated, summary.unchanged) == (1, 2)
    found = client.get("/fhir/Patient", params={"family": "Smith"}).json()
    assert found["entry"][0]["resource"]["meta"]["versionId"] == "2"


def test_failed_patient_has_a_reason_and_others_go_on(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    rows = populate(sim)
    sim.encounters[1]["class_code"] = "A  B"  # not a valid FHIR code
    summary = syncer(client, oe).run()
    assert (summary.created, summary.failed) == (2, 1)
    assert "Encounter" in summary.reasons[rows[1]["uuid"]]
    assert count(client, "Patient") == 2  # the failed patient's bundle wrote nothing


def test_interrupted_run_resumes_at_the_remembered_offset(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    populate(sim, 5)

    def stop_at_fourth(summary: Any) -> None:
        if summary.total == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        syncer(client, oe).run(progress=stop_at_fourth)
    resumed = syncer(client, oe).run()
    assert resumed.total == 3  # offset 2 (the page boundary before the interruption) onwards
    assert (resumed.created, resumed.unchanged) == (2, 1)
    assert count(client, "Patient") == 5
    assert syncer(client, oe).run().total == 5  # a completed run starts from the beginning


def test_one_patient_and_unknown_patient(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    rows = populate(sim)
    summary, patient_id = syncer(client, oe).sync_patient(rows[2]["uuid"])
    assert summary.created == 1 and patient_id
    assert count(client, "Patient") == 1
    missing, none = syncer(client, oe).sync_patient("00000000-0000-4000-8000-000000000000")
    assert none is None and missing.failed == 1
    assert "no such patient" in next(iter(missing.reasons.values()))


def test_identifiers_from_other_sources_are_kept(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    row = populate(sim, 1)[0]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": "urn:oid:1.2.3", "value": "HL7-1"},
                        {"system": SYSTEMS.uuid, "value": row["uuid"]},
                    ],
                    "link": [{"other": {"reference": "Patient/old"}, "type": "replaces"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    apply_transaction(client.app.state.context, bundle)  # type: ignore[attr-defined]
    summary = syncer(client, oe).run()
    assert summary.updated == 1
    patient = client.get("/fhir/Patient").json()["entry"][0]["resource"]
    systems = {i["system"] for i in patient["identifier"]}
    assert {"urn:oid:1.2.3", SYSTEMS.uuid, SYSTEMS.pid, SYSTEMS.mrn} <= systems
    assert patient["link"][0]["type"] == "replaces"
    assert patient["name"][0]["family"] == "Lee0"


def test_openemr_down_stops_the_run_and_the_next_run_resumes(
    client: TestClient, sim: OpenEmrSimulator, oe_config: Any
) -> None:
    populate(sim, 4)
    oe_config.retries = 0
    with OpenEmrClient(oe_config) as flaky:
        calls = {"n": 0}
        real = flaky.encounters

        def failing_on_third(puuid: str) -> Any:
            calls["n"] += 1
            if calls["n"] == 3:
                sim.fail_next = [503]
            return real(puuid)

        flaky.encounters = failing_on_third  # type: ignore[method-assign]
        with pytest.raises(OpenEmrUnavailable):
            syncer(client, flaky).run()
        assert count(client, "Patient") == 2
        resumed = syncer(client, flaky).run()
    assert (resumed.created, resumed.total) == (2, 2)  # from the page where it stopped
    assert count(client, "Patient") == 4
