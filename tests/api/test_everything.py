"""Patient/$everything: the compartment, then what its resources reference (one level), paged
across both parts."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def put(client: TestClient, resource: dict[str, Any]) -> None:
    path = f"/fhir/{resource['resourceType']}/{resource['id']}"
    response = client.put(path, json=resource)
    assert response.status_code in (200, 201), response.text


def seed(client: TestClient) -> None:
    put(client, {"resourceType": "Organization", "id": "org", "name": "General"})
    put(client, {"resourceType": "Organization", "id": "unrelated", "name": "Other"})
    put(client, {"resourceType": "Practitioner", "id": "doc"})
    put(client, {"resourceType": "Location", "id": "ward"})
    put(client, {"resourceType": "Device", "id": "scale"})
    put(client, {"resourceType": "Medication", "id": "med", "code": {"text": "aspirin"}})
    put(client, {"resourceType": "Patient", "id": "p1", "managingOrganization":
                 {"reference": "Organization/org"},
                 "generalPractitioner": [{"reference": "Practitioner/doc"}]})  # fmt: skip
    put(client, {"resourceType": "Patient", "id": "p2"})
    put(client, {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"},
                 "location": [{"location": {"reference": "Location/ward"}}]})  # fmt: skip
    put(client, {"resourceType": "Observation", "id": "o1", "status": "final",
                 "code": {"text": "weight"}, "subject": {"reference": "Patient/p1"},
                 "device": {"reference": "Device/scale"},
                 "performer": [{"reference": "Practitioner/doc"}],
                 "encounter": {"reference": "Encounter/e1"}})  # fmt: skip
    put(client, {"resourceType": "MedicationRequest", "id": "mr1", "status": "active",
                 "intent": "order", "subject": {"reference": "Patient/p1"},
                 "medicationReference": {"reference": "Medication/med"}})  # fmt: skip
    put(client, {"resourceType": "Observation", "id": "o2", "status": "final",
                 "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}})  # fmt: skip


def entries(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{e['resource']['resourceType']}/{e['resource']['id']}", e["search"]["mode"])
        for e in bundle.get("entry", [])
    ]


def test_everything_includes_what_the_record_references(client: TestClient) -> None:
    seed(client)
    bundle = client.get("/fhir/Patient/p1/$everything").json()
    got = dict(entries(bundle))
    assert {k for k, mode in got.items() if mode == "match"} == {
        "Patient/p1", "Encounter/e1", "Observation/o1", "MedicationRequest/mr1",
    }  # fmt: skip
    assert {k for k, mode in got.items() if mode == "include"} == {
        "Organization/org", "Practitioner/doc", "Location/ward", "Device/scale", "Medication/med",
    }  # fmt: skip
    assert bundle["total"] == 9
    assert "Organization/unrelated" not in got and "Observation/o2" not in got


def test_everything_pages_across_both_parts(client: TestClient) -> None:
    seed(client)
    seen: list[tuple[str, str]] = []
    url: str | None = "/fhir/Patient/p1/$everything?_count=4"
    pages = 0
    while url:
        bundle = client.get(url.replace("http://testserver", "")).json()
        assert bundle["total"] == 9
        seen += entries(bundle)
        pages += 1
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert pages == 3 and len(seen) == 9 and len(set(seen)) == 9
    modes = [mode for _, mode in seen]
    assert modes == sorted(modes, key=lambda m: m != "match")  # the compartment first
    bad = client.get("/fhir/Patient/p1/$everything?_count=x")
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
