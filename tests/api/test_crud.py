"""Instance and type interactions over HTTP: create, read, vread, update, patch, delete."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

FHIR = "application/fhir+json"


def patient(family: str = "Chalmers", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"mrn-{family}"}],
        "name": [{"family": family, "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        **extra,
    }


def create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers={"Content-Type": FHIR}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_create_sets_identity_and_headers(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient(), headers={"Content-Type": FHIR})
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert "Last-Modified" in response.headers


def test_create_ignores_client_id_and_accepts_plain_json(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient",
        json=patient(id="client-chosen"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert response.json()["id"] != "client-chosen"


def test_read_returns_the_stored_resource(client: TestClient) -> None:
    created = create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/does-not-exist")
    assert response.status_code == 404
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"


def test_unknown_type_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Spaceship/1")
    assert response.status_code == 404
    assert "Spaceship" in response.json()["issue"][0]["diagnostics"]


def test_update_creates_new_versions_and_vread_sees_each(client: TestClient) -> None:
    created = create(client, patient())
    pid = created["id"]
    changed = {**created, "gender": "female"}
    response = client.put(f"/fhir/Patient/{pid}", json=changed, headers={"Content-Type": FHIR})
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v1.json()["gender"] == "male"
    assert v2.json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_with_identical_content_keeps_version(client: TestClient) -> None:
    created = create(client, patient())
    response = client.put(f"/fhir/Patient/{created['id']}", json=created)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "1"


def test_create_on_update(client: TestClient) -> None:
    response = client.put("/fhir/Patient/chosen-id", json=patient(id="chosen-id"))
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/Patient/chosen-id/_history/1")
    assert client.get("/fhir/Patient/chosen-id").status_code == 200


def test_update_with_mismatched_id_is_400(client: TestClient) -> None:
    response = client.put("/fhir/Patient/a", json=patient(id="b"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["id"]


def test_if_match_optimistic_locking(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    ok = client.put(url, json={**created, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(url, json={**created, "gender": "female"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert client.get(url).json()["gender"] == "other"


def test_delete_then_read_is_gone_and_delete_is_idempotent(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    assert client.delete(url).status_code == 204
    gone = client.get(url)
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert client.delete(url).status_code == 204
    assert client.delete("/fhir/Patient/never-existed").status_code == 204
    # deleted resources no longer match searches
    assert client.get("/fhir/Patient", params={"family": "Chalmers"}).json()["total"] == 0


def test_update_after_delete_revives_resource(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    client.delete(url)
    response = client.put(url, json=created)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


def test_json_patch(client: TestClient) -> None:
    created = create(client, patient())
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = client.patch(
        f"/fhir/Patient/{created['id']}",
        content=_json(ops),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gender"] == "female" and body["active"] is True
    assert body["meta"]["versionId"] == "2"


def test_merge_patch(client: TestClient) -> None:
    created = create(client, patient())
    response = client.patch(
        f"/fhir/Patient/{created['id']}",
        content=_json({"gender": "female", "birthDate": None}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["gender"] == "female"
    assert "birthDate" not in body


def test_patch_that_makes_resource_invalid_is_rejected(client: TestClient) -> None:
    created = create(client, patient())
    response = client.patch(
        f"/fhir/Patient/{created['id']}",
        content=_json([{"op": "replace", "path": "/gender", "value": 42}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400
    assert "gender" in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{created['id']}").json()["gender"] == "male"


def test_conditional_create(client: TestClient) -> None:
    condition = {"If-None-Exist": "identifier=urn:oid:1.2.36.146.595.217.0.1|mrn-Chalmers"}
    first = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    create(client, patient())  # a second one with the same identifier
    third = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert third.status_code == 412


def test_conditional_update(client: TestClient) -> None:
    query = {"identifier": "urn:oid:1.2.36.146.595.217.0.1|mrn-Chalmers"}
    created = client.put("/fhir/Patient", params=query, json=patient())
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put("/fhir/Patient", params=query, json=patient(gender="female"))
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"


def test_conditional_delete(client: TestClient) -> None:
    a = create(client, patient("Alpha"))
    create(client, patient("Beta"))
    assert client.delete("/fhir/Patient", params={"family": "Alpha"}).status_code == 204
    assert client.get(f"/fhir/Patient/{a['id']}").status_code == 410
    create(client, patient("Beta"))
    assert client.delete("/fhir/Patient", params={"family": "Beta"}).status_code == 412


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b"{not json", headers={"Content-Type": FHIR})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_invalid_resource_names_the_field(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "birthDate": "not-a-date"}
    )
    assert response.status_code == 400
    assert "birthDate" in response.json()["issue"][0]["diagnostics"]


def test_resource_type_mismatch_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={"resourceType": "Observation"})
    assert response.status_code == 400


def test_wrong_method_is_405(client: TestClient) -> None:
    response = client.post("/fhir/Patient/123", json=patient())
    assert response.status_code == 405
    assert "Allow" in response.headers
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unsupported_media_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415


def test_xml_only_accept_is_406(client: TestClient) -> None:
    assert (
        client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    )


def test_prefer_return_minimal(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert "Location" in response.headers


def test_if_none_match_gives_304(client: TestClient) -> None:
    created = create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_a_read_by_id_shapes_its_body_and_names_its_version(client: TestClient) -> None:
    """The read by id runs on the event loop on both databases (SQLite inline, PostgreSQL
    awaited): the same headers, shaping and misses as through the threads."""
    created = create(client, patient())
    read = client.get(f"/fhir/Patient/{created['id']}", params={"_elements": "gender"})
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"1"' and "Last-Modified" in read.headers
    assert "Content-Location" not in read.headers
    body = read.json()
    assert body["gender"] == "male" and "name" not in body
    assert client.get("/fhir/Patient/no-such-id").status_code == 404
    assert client.get("/fhir/NoSuchType/x").status_code == 404


def test_any_r4_type_can_be_stored_and_found_by_id(client: TestClient) -> None:
    basic = {"resourceType": "Basic", "code": {"text": "note"}}
    created = create(client, basic)
    found = client.get("/fhir/Basic", params={"_id": created["id"]}).json()
    assert found["total"] == 1


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()
