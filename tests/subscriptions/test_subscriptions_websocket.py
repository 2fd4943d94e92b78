"""The R4 websocket binding: bind, bound, one ping per matching notification, and the
notifications that waited for a listener."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient
from subscription_helpers import eventually, observation, status_of


def ws_subscription(
    sub_id: str, criteria: str = "Observation?code=http://loinc.org|4548-4"
) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "id": sub_id,
        "status": "requested",
        "reason": "AI reports",
        "criteria": criteria,
        "channel": {"type": "websocket"},
    }


def test_a_bound_client_gets_a_ping_per_notification(api: TestClient) -> None:
    api.put("/fhir/Subscription/w1", json=ws_subscription("w1"))
    eventually(lambda: status_of(api, "w1") == "active")
    api.put("/fhir/Observation/before", json=observation("before", "4548-4"))  # waits for a bind
    with api.websocket_connect("/fhir/websocket") as ws:
        ws.send_text("bind w1")
        assert ws.receive_text() == "bound w1"
        assert ws.receive_text() == "ping w1"  # the one that waited
        api.put("/fhir/Observation/other", json=observation("other", "1111-1"))
        api.put("/fhir/Observation/after", json=observation("after", "4548-4"))
        assert ws.receive_text() == "ping w1"
        ws.send_text("bind nope")
        assert ws.receive_text().startswith("error no live websocket Subscription/nope")
        ws.send_text("hello")
        assert ws.receive_text().startswith("error unknown command")
    with api.websocket_connect("/fhir/websocket") as ws:  # nothing left over
        ws.send_text("bind w1")
        assert ws.receive_text() == "bound w1"
        api.put("/fhir/Observation/last", json=observation("last", "4548-4"))
        assert ws.receive_text() == "ping w1"
