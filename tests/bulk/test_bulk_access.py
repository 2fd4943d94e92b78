"""Who may export, and who may read the result: backend-services scopes, files per client."""

from __future__ import annotations

from bulk_helpers import ASYNC, backend_token, ndjson, wait_for
from starlette.testclient import TestClient


def _seed(client: TestClient, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    for pid in ("a", "b"):
        body = {"resourceType": "Patient", "id": pid}
        assert client.put(f"/fhir/Patient/{pid}", json=body, headers=auth).status_code == 201
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/a"},
    }
    assert client.put("/fhir/Observation/o1", json=obs, headers=auth).status_code == 201


def test_export_needs_a_token_and_a_system_scope(auth_api: TestClient) -> None:
    assert auth_api.get("/fhir/$export", headers=ASYNC).status_code == 401
    writer = backend_token(auth_api, "system/*.cruds")
    _seed(auth_api, writer)
    patient_only = backend_token(auth_api, "system/Patient.rs")
    headers = {**ASYNC, "Authorization": f"Bearer {patient_only}"}
    refused = auth_api.get("/fhir/$export?_type=Observation", headers=headers)
    assert refused.status_code == 403
    assert "system/Observation.rs" in refused.json()["issue"][0]["diagnostics"]
    kick = auth_api.get("/fhir/$export", headers=headers)
    assert kick.status_code == 202, kick.text
    bearer = {"Authorization": f"Bearer {patient_only}"}
    manifest = wait_for(auth_api, kick.headers["Content-Location"], bearer).json()
    assert manifest["requiresAccessToken"] is True
    assert [o["type"] for o in manifest["output"]] == ["Patient"]  # only what it may read
    assert {r["id"] for r in ndjson(auth_api, manifest["output"][0]["url"], bearer)} == {"a", "b"}


def test_files_and_status_are_served_only_to_the_client_that_asked(auth_api: TestClient) -> None:
    owner = backend_token(auth_api, "system/*.cruds")
    _seed(auth_api, owner)
    mine = {"Authorization": f"Bearer {owner}"}
    kick = auth_api.get("/fhir/$export", headers={**ASYNC, **mine})
    status_url = kick.headers["Content-Location"]
    manifest = wait_for(auth_api, status_url, mine).json()
    file_url = manifest["output"][0]["url"]
    other = {"Authorization": f"Bearer {backend_token(auth_api, 'system/*.rs')}"}
    assert auth_api.get(file_url).status_code == 401  # requiresAccessToken
    for url in (file_url, status_url):
        response = auth_api.get(url, headers=other)
        assert response.status_code == 404, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert auth_api.delete(status_url, headers=other).status_code == 404
    assert auth_api.get(file_url, headers=mine).status_code == 200
    assert auth_api.get(status_url, headers=mine).status_code == 200


def test_a_patient_confined_token_cannot_export(auth_api: TestClient) -> None:
    token = backend_token(auth_api, "system/Observation.rs?category=laboratory")
    response = auth_api.get(
        "/fhir/$export?_type=Observation", headers={**ASYNC, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403


def test_import_needs_backend_write_scopes(auth_api: TestClient) -> None:
    body = {"input": [{"type": "Patient", "url": "http://127.0.0.1:9/Patient.ndjson"}]}
    reader = backend_token(auth_api, "system/Patient.rs")
    headers = {**ASYNC, "Authorization": f"Bearer {reader}"}
    assert auth_api.post("/fhir/$import", json=body, headers=headers).status_code == 403
    writer = backend_token(auth_api, "system/Patient.cu")
    headers = {**ASYNC, "Authorization": f"Bearer {writer}"}
    kick = auth_api.post("/fhir/$import", json=body, headers=headers)
    assert kick.status_code == 202, kick.text
    untyped = {"input": [{"url": "http://127.0.0.1:9/all.ndjson"}]}
    assert auth_api.post("/fhir/$import", json=untyped, headers=headers).status_code == 403
