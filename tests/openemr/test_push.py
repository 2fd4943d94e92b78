"""Canonical -> OpenEMR patient creation against the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from simulator import OpenEmrSimulator
from starlette.testclient import TestClient

from mappers.openemr import Systems
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.push import pending, push_patient

SYSTEMS = Systems.for_site("default")


def canonical_patient(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "H1"}]}
    body |= fields
    resp = client.post("/fhir/Patient", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def ctx(client: TestClient) -> Any:
    return client.app.state.context  # type: ignore[attr-defined]


def reads(client: TestClient) -> Any:
    return client.app.state.fhir_reads  # type: ignore[attr-defined]


def test_new_patient_is_created_once(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    pat = canonical_patient(
        client,
        name=[{"family": "Nguyen", "given": ["Mai", "T"]}],
        birthDate="1975-03-04",
        gender="female",
    )
    result = push_patient(ctx(client), oe, SYSTEMS, pat["id"])
    assert result.status == "created"
    row = sim.patients[result.uuid or ""]
    assert (row["fname"], row["mname"], row["lname"], row["DOB"], row["sex"], row["pubpid"]) == (
        "Mai", "T", "Nguyen", "1975-03-04", "Female", "H1"
    )  # fmt: skip
    stored = client.get(f"/fhir/Patient/{pat['id']}").json()
    idents = {i["system"]: i["value"] for i in stored["identifier"]}
    assert idents[SYSTEMS.uuid] == result.uuid
    assert idents[SYSTEMS.pid] == str(row["pid"])
    assert idents["urn:oid:1.2.3"] == "H1"
    assert push_patient(ctx(client), oe, SYSTEMS, pat["id"]).status == "known"
    assert len(sim.patients) == 1


def test_lost_answer_is_found_by_name_dob_and_pubpid(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female", pubpid="OTHER")
    earlier = sim.add_patient(
        fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female", pubpid="H1"
    )
    pat = canonical_patient(
        client, name=[{"family": "Nguyen", "given": ["Mai"]}], birthDate="1975-03-04"
    )
    result = push_patient(ctx(client), oe, SYSTEMS, pat["id"])
    assert (result.status, result.uuid) == ("linked", earlier["uuid"])
    assert len(sim.patients) == 2
    assert ("POST", "/apis/default/api/patient") not in sim.log


def test_unknown_gender_is_sent_as_Unknown(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    pat = canonical_patient(
        client, name=[{"family": "Li", "given": ["Bo"]}], birthDate="2001-01-01", gender="unknown"
    )
    result = push_patient(ctx(client), oe, SYSTEMS, pat["id"])
    assert result.status == "created"
    assert sim.patients[result.uuid or ""]["sex"] == "Unknown"


def test_missing_data_is_tagged_pending_and_nothing_is_sent(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    pat = canonical_patient(client, name=[{"family": "X", "given": ["Bo"]}], birthDate="2001-01-01")
    result = push_patient(ctx(client), oe, SYSTEMS, pat["id"])
    assert result.status == "pending"
    assert not [p for m, p in sim.log if m == "POST"]
    assert not [p for m, p in sim.log if "/api/" in p]
    tagged = client.get(
        "/fhir/Patient", params={"_tag": "urn:interop:openemr-pending|family-name-too-short"}
    )
    assert tagged.json()["total"] == 1
    listed = pending(reads(client))
    assert listed == [
        {
            "id": pat["id"],
            "name": "Bo X",
            "birthDate": "2001-01-01",
            "code": "family-name-too-short",
            "reason": "family name shorter than 2 characters",
        }
    ]
    version = client.get(f"/fhir/Patient/{pat['id']}").json()["meta"]["versionId"]
    push_patient(ctx(client), oe, SYSTEMS, pat["id"])  # again: same tag, no new version
    assert client.get(f"/fhir/Patient/{pat['id']}").json()["meta"]["versionId"] == version
    # corrected at the source: the next push creates it and clears the tag
    fixed = client.get(f"/fhir/Patient/{pat['id']}").json()
    fixed["name"] = [{"family": "Xu", "given": ["Bo"]}]
    assert client.put(f"/fhir/Patient/{pat['id']}", json=fixed).status_code == 200
    assert push_patient(ctx(client), oe, SYSTEMS, pat["id"]).status == "created"
    assert pending(reads(client)) == []
    stored = client.get(f"/fhir/Patient/{pat['id']}").json()
    assert "tag" not in stored.get("meta", {})


def test_patient_without_identifier_is_pending(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    body = {"resourceType": "Patient", "name": [{"family": "Xu", "given": ["Bo"]}]}
    resp = client.post("/fhir/Patient", json=body | {"birthDate": "2001-01-01"})
    result = push_patient(ctx(client), oe, SYSTEMS, resp.json()["id"])
    assert result.status == "pending"
    assert [p["code"] for p in pending(reads(client))] == ["no-identifier"]


def test_partial_birth_date_is_pending(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    pat = canonical_patient(client, name=[{"family": "Xu", "given": ["Bo"]}], birthDate="1980")
    assert push_patient(ctx(client), oe, SYSTEMS, pat["id"]).status == "pending"
    assert pending(reads(client))[0]["code"] == "partial-birth-date"
