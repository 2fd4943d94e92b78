"""`$import` leaves an AuditEvent naming the import job and every resource it loaded."""

from __future__ import annotations

from audit_support import assert_change_audited, audited
from starlette.testclient import TestClient
from test_bulk_import import kick_off, population, to_ndjson


def test_import_is_audited_with_its_job(api: TestClient) -> None:
    rows = population(2)["Observation"][:2]
    upload = api.post(
        "/fhir/$bulk-upload",
        content=to_ndjson(rows),
        headers={"Content-Type": "application/fhir+ndjson"},
    )
    assert upload.status_code == 201, upload.text
    store = api.app.state.store  # type: ignore[attr-defined]
    with audited(store):
        result = kick_off(
            api, {"input": [{"type": "Observation", "url": upload.headers["Location"]}]}
        )
    assert result["output"][0]["count"] == 2
    event = assert_change_audited(
        store, [f"Observation/{r['id']}" for r in rows], "import", "$import job"
    )
    assert event["type"]["code"] == "110107"
