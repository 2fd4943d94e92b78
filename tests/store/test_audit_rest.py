"""REST writes, single and in a transaction, each leave their AuditEvent (written by the store
in the change's transaction, so no flush is needed)."""

from __future__ import annotations

from audit_support import audited, events_naming
from starlette.testclient import TestClient


def test_rest_writes_are_audited_by_the_store(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    with audited(store):
        pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        body = {"resourceType": "Patient", "id": pid, "gender": "female"}
        assert client.put(f"/fhir/Patient/{pid}", json=body).status_code == 200
        assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
        post = {"method": "POST", "url": "Observation"}
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": obs, "request": post}] * 2}  # fmt: skip
        done = client.post("/fhir", json=bundle)
    codes = sorted(e["subtype"][0]["code"] for e in events_naming(store, f"Patient/{pid}"))
    assert codes == ["create", "delete", "update"]
    locations = [e["response"]["location"] for e in done.json()["entry"]]
    ids = {"/".join(loc.split("/_history")[0].split("/")[-2:]) for loc in locations}
    (event,) = events_naming(store, next(iter(ids)))
    assert event["subtype"][0]["code"] == "transaction"
    assert {e["what"]["reference"] for e in event["entity"]} == ids
