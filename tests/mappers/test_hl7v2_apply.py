"""Mapped bundles go through the same transaction path as a POSTed Bundle."""

from __future__ import annotations

from starlette.testclient import TestClient

from mappers.hl7v2 import parse, to_bundle

MSG = "\r".join(
    [
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1",
        "PID|1||123^^^HOSP&1.2.3&ISO^MR||Müller^Zoë||19800102|F",
        "PV1|1|O|||||||||||||||||V7",
        "OBR|1|PL1|FI1|2345-7^Glucose^LN|||20240101110000|||||||||||||||20240101113000|||{st}",
        "OBX|1|NM|2345-7^Glucose^LN||{value}|mg/dL^^UCUM|70-99|H|||{st}",
        "SPM|1|S1||119297000^Blood^SCT",
    ]
)


def count(client: TestClient, path: str) -> int:
    return int(client.get(f"/fhir/{path}", params={"_summary": "count"}).json()["total"])


def test_corrected_result_updates_the_same_resources(client: TestClient) -> None:
    for ctrl, st, value in (("C1", "F", "120"), ("C2", "C", "95")):
        bundle = to_bundle(parse(MSG.format(ctrl=ctrl, st=st, value=value)))
        resp = client.post("/fhir", json=bundle)
        assert resp.status_code == 200, resp.text
    assert count(client, "Patient") == 1
    assert count(client, "Observation") == 1
    assert count(client, "DiagnosticReport") == 1
    assert count(client, "Encounter") == 1
    assert count(client, "Specimen") == 1
    obs = client.get("/fhir/Observation").json()["entry"][0]["resource"]
    assert obs["status"] == "corrected"
    assert obs["valueQuantity"]["value"] == 95
    assert obs["meta"]["versionId"] == "2"
    pat = client.get("/fhir/Patient").json()["entry"][0]["resource"]
    assert pat["name"][0]["given"] == ["Zoë"]


def test_performers_are_stored_once_across_messages(client: TestClient) -> None:
    fields = ["OBX", "1", "NM", "2345-7^Glucose^LN", "", "{value}", "mg/dL^^UCUM"] + [""] * 19
    fields[11], fields[16], fields[23] = "F", "77^Smith^Ann", "Central Lab^^^^^^^^^CLIA123"
    obx = "|".join(fields)
    for ctrl, value in (("P1", "120"), ("P2", "95")):
        segments = MSG.format(ctrl=ctrl, st="F", value=value).split("\r")
        text = "\r".join(obx.format(value=value) if s[:3] == "OBX" else s for s in segments)
        resp = client.post("/fhir", json=to_bundle(parse(text)))
        assert resp.status_code == 200, resp.text
    assert count(client, "Practitioner") == 1
    assert count(client, "Organization") == 1
    obs = client.get("/fhir/Observation").json()["entry"][0]["resource"]
    assert len(obs["performer"]) == 2
    found = client.get("/fhir/Observation", params={"performer:Practitioner.identifier": "77"})
    assert found.json()["total"] == 1
