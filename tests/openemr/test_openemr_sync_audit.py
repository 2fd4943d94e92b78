"""An OpenEMR sync leaves an AuditEvent naming the site and every resource it changed."""

from __future__ import annotations

from audit_support import assert_change_audited, audited
from simulator import OpenEmrSimulator
from starlette.testclient import TestClient
from test_sync import populate, syncer

from openemr_bridge.client import OpenEmrClient


def test_sync_is_audited_with_the_site(
    client: TestClient, sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    populate(sim, 1)
    store = client.app.state.store  # type: ignore[attr-defined]
    with audited(store):
        assert syncer(client, oe).run().created == 1
    changed = [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for path in ("Patient", "Encounter", "Condition")
        for e in client.get(f"/fhir/{path}").json()["entry"]
    ]
    event = assert_change_audited(store, changed, "openemr", "urn:openemr:default")
    assert event["subtype"][0]["code"] == "transaction"
