"""$export: kick-off, polling, manifest, NDJSON content, filters, Group, splitting, cancel,
expiry. Auth off here; test_bulk_access.py covers who may do and read what."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk_helpers import ASYNC, ndjson, wait_for
from fhir.resources.R4B import get_fhir_model_class
from starlette.testclient import TestClient


def seed(api: TestClient, patients: int = 3, obs_per_patient: int = 2) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for p in range(patients):
        pid = f"p{p}"
        entries.append(
            {
                "resource": {"resourceType": "Patient", "id": pid, "name": [{"family": f"F{p}"}]},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            }
        )
        for o in range(obs_per_patient):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "id": f"o{p}-{o}",
                        "status": "final" if o % 2 == 0 else "preliminary",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                        "subject": {"reference": f"Patient/{pid}"},
                        "valueQuantity": {"value": 10 + o, "unit": "g/dL"},
                    },
                    "request": {"method": "PUT", "url": f"Observation/o{p}-{o}"},
                }
            )
    entries.append(
        {
            "resource": {"resourceType": "Organization", "id": "org1", "name": "General"},
            "request": {"method": "PUT", "url": "Organization/org1"},
        }
    )
    response = api.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    assert response.status_code == 200, response.text
    return {"patients": patients, "observations": patients * obs_per_patient}


def export(api: TestClient, path: str = "/fhir/$export", **params: str) -> dict[str, Any]:
    kick = api.get(path, params=params, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["Content-Location"]
    assert status_url.startswith("http://testserver/fhir/$bulk-status/")
    done = wait_for(api, status_url)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    assert "Expires" in done.headers
    manifest: dict[str, Any] = done.json()
    manifest["_status"] = status_url
    return manifest


def lines_by_type(api: TestClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        rows = ndjson(api, item["url"])
        assert len(rows) == item["count"]
        for row in rows:
            assert row["resourceType"] == item["type"]
            get_fhir_model_class(item["type"]).model_validate(row)  # a valid R4 resource
        out.setdefault(item["type"], []).extend(rows)
    return out


def test_system_export_writes_every_type_to_valid_ndjson(api: TestClient) -> None:
    seed(api)
    manifest = export(api)
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["transactionTime"].endswith("Z")
    assert manifest["requiresAccessToken"] is False  # auth is off in this app
    assert manifest["error"] == []
    data = lines_by_type(api, manifest)
    assert sorted(data) == ["Observation", "Organization", "Patient"]
    assert len(data["Patient"]) == 3 and len(data["Observation"]) == 6
    assert {r["id"] for r in data["Patient"]} == {"p0", "p1", "p2"}


def test_type_and_since_are_honoured(api: TestClient) -> None:
    seed(api)
    time.sleep(0.01)
    cut = api.get("/fhir/Organization/org1").json()["meta"]["lastUpdated"]  # written last
    time.sleep(0.01)
    api.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "active": True})
    api.put(
        "/fhir/Organization/org1",
        json={"resourceType": "Organization", "id": "org1", "name": "Renamed"},
    )
    data = lines_by_type(api, export(api, _type="Patient,Observation", _since=cut))
    assert list(data) == ["Patient"]  # the Organization changed too, but was not asked for
    assert [r["id"] for r in data["Patient"]] == ["p1"]
    data = lines_by_type(api, export(api, _type="Observation"))
    assert list(data) == ["Observation"] and len(data["Observation"]) == 6


def test_type_filter_and_elements(api: TestClient) -> None:
    seed(api)
    manifest = export(
        api, _type="Observation", _typeFilter="Observation?status=final", _elements="status"
    )
    rows = lines_by_type(api, manifest)["Observation"]
    assert len(rows) == 3 and all(r["status"] == "final" for r in rows)
    assert all("valueQuantity" not in r for r in rows)
    assert all(t["code"] == "SUBSETTED" for r in rows for t in r["meta"]["tag"])


def test_post_kick_off_with_parameters(api: TestClient) -> None:
    seed(api)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    }
    kick = api.post("/fhir/$export", json=body, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    manifest = wait_for(api, kick.headers["Content-Location"]).json()
    assert [o["type"] for o in manifest["output"]] == ["Patient"]


def test_patient_level_export_keeps_to_the_compartment(api: TestClient) -> None:
    seed(api)
    data = lines_by_type(api, export(api, "/fhir/Patient/$export"))
    assert sorted(data) == ["Observation", "Patient"]  # no Organization


def test_group_export_is_limited_to_members(api: TestClient) -> None:
    seed(api, patients=4)
    group = {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/p1"}},
            {"entity": {"reference": "http://testserver/fhir/Patient/p3"}},
            {"entity": {"reference": "Patient/p2"}, "inactive": True},
        ],
    }
    assert api.put("/fhir/Group/g1", json=group).status_code == 201
    data = lines_by_type(api, export(api, "/fhir/Group/g1/$export"))
    assert {r["id"] for r in data["Patient"]} == {"p1", "p3"}
    subjects = {r["subject"]["reference"] for r in data["Observation"]}
    assert subjects == {"Patient/p1", "Patient/p3"} and len(data["Observation"]) == 4
    missing = api.get("/fhir/Group/nope/$export", headers=ASYNC)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_files_split_at_the_configured_size(api: TestClient, bulk_app: Any) -> None:
    seed(api, patients=5, obs_per_patient=4)
    jobs = bulk_app.state.bulk.jobs
    import dataclasses

    jobs.config = dataclasses.replace(jobs.config, max_file_bytes=1500)
    manifest = export(api, _type="Observation")
    files = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert len(files) > 2
    assert sum(o["count"] for o in files) == 20
    for item in files:
        size = len(api.get(item["url"]).content)
        assert size <= 1500 or item["count"] == 1
    ids = [r["id"] for r in lines_by_type(api, manifest)["Observation"]]
    assert len(ids) == len(set(ids)) == 20


@pytest.mark.parametrize(
    ("params", "headers", "status", "text"),
    [
        ({}, {"Accept": "application/fhir+json"}, 400, "respond-async"),
        ({"_outputFormat": "text/csv"}, ASYNC, 400, "_outputFormat"),
        ({"_type": "Nonsense"}, ASYNC, 400, "unknown resource type"),
        ({"_typeFilter": "Observation?bogus=1"}, ASYNC, 400, "bogus"),
        ({"_typeFilter": "status=final"}, ASYNC, 400, "_typeFilter"),
        ({"_since": "yesterday"}, ASYNC, 400, "_since"),
        ({"includeAssociatedData": "LatestProvenanceResources"}, ASYNC, 400, "lenient"),
        ({"whatever": "1"}, ASYNC, 400, "Unknown $export parameter"),
    ],
)
def test_bad_kick_offs_get_an_operation_outcome(
    api: TestClient, params: dict[str, str], headers: dict[str, str], status: int, text: str
) -> None:
    response = api.get("/fhir/$export", params=params, headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert text in body["issue"][0]["diagnostics"]


def test_lenient_handling_ignores_and_reports(api: TestClient) -> None:
    seed(api)
    headers = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    kick = api.get("/fhir/$export?_type=Patient&whatever=1", headers=headers)
    assert kick.status_code == 202, kick.text
    manifest = wait_for(api, kick.headers["Content-Location"]).json()
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    (error,) = manifest["error"]
    outcome = ndjson(api, error["url"])[0]
    assert "whatever" in outcome["issue"][0]["diagnostics"]


def test_cancel_removes_the_job_and_its_files(api: TestClient, bulk_app: Any) -> None:
    seed(api)
    manifest = export(api)
    folder = Path(bulk_app.state.bulk.jobs.config.directory)
    assert any(folder.iterdir())
    response = api.delete(manifest["_status"])
    assert response.status_code == 202
    gone = api.get(manifest["_status"])
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
    assert api.get(manifest["output"][0]["url"]).status_code == 404
    assert not any(folder.iterdir())
    assert api.delete(manifest["_status"]).status_code == 404


def test_cancel_while_running_stops_the_job(api: TestClient, bulk_app: Any) -> None:
    service = bulk_app.state.bulk
    runner, service.runner = service.runner, None  # nothing picks the job up yet
    try:
        kick = api.get("/fhir/$export", headers=ASYNC)
        status_url = kick.headers["Content-Location"]
        pending = api.get(status_url)
        assert pending.status_code == 202 and pending.headers["X-Progress"] == "accepted"
        assert api.delete(status_url).status_code == 202
    finally:
        service.runner = runner
    job_id = status_url.rsplit("/", 1)[-1]
    runner.submit(job_id)  # a worker that sees it late does nothing
    runner.start().submit(lambda: None).result()
    assert api.get(status_url).status_code == 404


def test_expired_exports_are_cleaned_up(api: TestClient, bulk_app: Any) -> None:
    seed(api)
    manifest = export(api)
    jobs = bulk_app.state.bulk.jobs
    assert jobs.cleanup() == 0  # not yet expired
    far_future = int(time.time() * 1e6) + 10 * 86_400_000_000
    assert jobs.cleanup(now=far_future) == 1
    assert api.get(manifest["_status"]).status_code == 404
    assert api.get(manifest["output"][0]["url"]).status_code == 404
    assert not any(Path(jobs.config.directory).iterdir())


def test_unknown_status_and_file_urls_are_404(api: TestClient) -> None:
    for url in ("/fhir/$bulk-status/nope", "/fhir/$bulk-file/nope/Patient-1.ndjson"):
        response = api.get(url)
        assert response.status_code == 404
        assert orjson.loads(response.content)["resourceType"] == "OperationOutcome"
    assert api.put("/fhir/$bulk-status/nope").status_code == 405


def test_capability_statement_announces_bulk_operations(api: TestClient) -> None:
    statement = api.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    assert {o["name"] for o in rest["operation"]} == {"export", "import"}
    types = {r["type"]: r for r in rest["resource"]}
    assert "export" in {o["name"] for o in types["Group"]["operation"]}
    assert "export" in {o["name"] for o in types["Patient"]["operation"]}
    assert rest["extension"][0]["valueUrl"] == "ws://testserver/fhir/websocket"
    get_fhir_model_class("CapabilityStatement").model_validate(statement)


def test_jobs_accepted_before_a_restart_are_picked_up(api: TestClient, bulk_app: Any) -> None:
    seed(api)
    service = bulk_app.state.bulk
    runner, service.runner = service.runner, None
    try:
        status_url = api.get("/fhir/$export", headers=ASYNC).headers["Content-Location"]
    finally:
        service.runner = runner
    assert api.get(status_url).status_code == 202
    service.start()  # what the app does at start-up
    assert wait_for(api, status_url).status_code == 200


def test_jobs_orphaned_by_a_crash_are_recovered(api: TestClient, bulk_app: Any) -> None:
    from sqlalchemy import update

    from fhir_server.bulk.models import bulk_jobs

    seed(api)
    service = bulk_app.state.bulk
    runner, service.runner = service.runner, None
    try:
        export_url = api.get("/fhir/$export", headers=ASYNC).headers["Content-Location"]
        body = {"input": [{"type": "Patient", "url": "http://127.0.0.1:9/p.ndjson"}]}
        import_url = api.post("/fhir/$import", json=body, headers=ASYNC).headers["Content-Location"]
    finally:
        service.runner = runner
    for url in (export_url, import_url):  # claimed by a process that then died
        assert service.jobs.claim(url.rsplit("/", 1)[-1])
    with bulk_app.state.store.write_connection() as conn:
        conn.execute(update(bulk_jobs).values(heartbeat=0))
    service.start()
    assert wait_for(api, export_url).status_code == 200
    failed = wait_for(api, import_url)
    assert failed.status_code == 500
    assert "run the import again" in failed.json()["issue"][0]["diagnostics"]


def test_group_export_with_the_patient_parameter(api: TestClient) -> None:
    seed(api, patients=3)
    group = {
        "resourceType": "Group",
        "id": "g2",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/p{i}"}} for i in range(3)],
    }
    api.put("/fhir/Group/g2", json=group)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
            {"name": "patient", "valueReference": {"reference": "Patient/not-a-member"}},
        ],
    }
    kick = api.post("/fhir/Group/g2/$export", json=body, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    manifest = wait_for(api, kick.headers["Content-Location"]).json()
    data = lines_by_type(api, manifest)
    assert [r["id"] for r in data["Patient"]] == ["p2"]
    assert {r["subject"]["reference"] for r in data["Observation"]} == {"Patient/p2"}
    (error,) = manifest["error"]
    assert "not-a-member" in ndjson(api, error["url"])[0]["issue"][0]["diagnostics"]
