"""Transactions, batches and history over HTTP."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

MRN = "urn:oid:1.2.36.146.595.217.0.1"


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(
    resource: dict[str, Any], full_url: str | None = None, **request: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def count(client: TestClient, path: str) -> int:
    return int(client.get(f"/fhir/{path}", params={"_summary": "count"}).json()["total"])


def test_transaction_resolves_urn_uuid_references(client: TestClient) -> None:
    pat = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    body = bundle(
        "transaction",
        post_entry(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": pat},
            }
        ),
        post_entry({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "7"}]}, pat),
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_location = result["entry"][1]["response"]["location"]
    patient_id = patient_location.split("/Patient/")[1].split("/")[0]
    obs_location = result["entry"][0]["response"]["location"].replace("http://testserver", "")
    obs = client.get(obs_location.split("/_history")[0]).json()
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_is_all_or_nothing_and_names_the_entry(client: TestClient) -> None:
    body = bundle(
        "transaction",
        post_entry({"resourceType": "Patient", "name": [{"family": "Kept?"}]}),
        post_entry({"resourceType": "Patient", "birthDate": "yesterday"}),
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert count(client, "Patient") == 0


def test_transaction_conditional_create_and_conditional_reference(client: TestClient) -> None:
    existing = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": "42"}]},
    )
    pid = existing.json()["id"]
    body = bundle(
        "transaction",
        post_entry(
            {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "42"}]},
            "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001",
            ifNoneExist=f"identifier={MRN}|42",
        ),
        post_entry(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "a"},
                "subject": {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"},
            }
        ),
        post_entry(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "b"},
                "subject": {"reference": f"Patient?identifier={MRN}|42"},
            }
        ),
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert count(client, "Patient") == 1
    found = client.get("/fhir/Observation", params={"subject": f"Patient/{pid}"}).json()
    assert found["total"] == 2


def test_transaction_processing_order_delete_before_create(client: TestClient) -> None:
    old = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": "9"}]},
    ).json()
    body = bundle(
        "transaction",
        post_entry(
            {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "9"}]},
            ifNoneExist=f"identifier={MRN}|9",
        ),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 200, response.text
    # the delete ran first, so the conditional create found nothing and created a new one
    assert response.json()["entry"][0]["response"]["status"] == "201 Created"
    assert client.get(f"/fhir/Patient/{old['id']}").status_code == 410


def test_transaction_conditional_update_and_read(client: TestClient) -> None:
    body = bundle(
        "transaction",
        {
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": "5"}],
                "gender": "male",
            },
            "request": {"method": "PUT", "url": f"Patient?identifier={MRN}|5"},
        },
        {"request": {"method": "GET", "url": "Patient?gender=male"}},
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["resource"]["total"] == 1


def test_batch_entries_are_independent(client: TestClient) -> None:
    body = bundle(
        "batch",
        post_entry({"resourceType": "Patient", "name": [{"family": "Good"}]}),
        post_entry({"resourceType": "Patient", "gender": 7}),
        {"request": {"method": "GET", "url": "Patient/missing"}},
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"].startswith("400")
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["response"]["status"].startswith("404")
    assert count(client, "Patient") == 1


def test_bundle_errors(client: TestClient) -> None:
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400
    assert (
        client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}).status_code
        == 400
    )
    assert (
        client.post("/fhir", json=bundle("transaction", {"request": {"method": "GET"}})).status_code
        == 400
    )


def test_history_instance_type_system(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}).json()[
        "id"
    ]
    client.put(
        f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "female"}
    )
    client.delete(f"/fhir/Patient/{pid}")
    client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Acme"})
    instance = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert instance["type"] == "history"
    assert instance["total"] == 3
    methods = [e["request"]["method"] for e in instance["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in instance["entry"][0]
    assert instance["entry"][1]["resource"]["gender"] == "female"
    assert client.get("/fhir/Patient/_history").json()["total"] == 3
    assert client.get("/fhir/_history").json()["total"] == 4
    since = instance["entry"][1]["response"]["lastModified"]
    recent = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": since}).json()
    assert recent["total"] == 2
    page = client.get("/fhir/_history", params={"_count": 1}).json()
    assert len(page["entry"]) == 1
    assert "next" in {link["relation"] for link in page["link"]}
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404


def test_transaction_writing_one_resource_twice_is_409(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "id": "twice"}
    body = bundle(
        "transaction",
        {"resource": patient, "request": {"method": "PUT", "url": "Patient/twice"}},
        {
            "resource": {**patient, "gender": "male"},
            "request": {"method": "PUT", "url": "Patient/twice"},
        },
    )
    response = client.post("/fhir", json=body)
    assert response.status_code == 409
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient/twice").status_code == 404
