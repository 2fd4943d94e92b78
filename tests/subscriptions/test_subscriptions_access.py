"""The SMART policy applies to Subscriptions: an owner is only told about what it may read,
and only the owner may bind a websocket subscription."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from subscription_helpers import Receiver, eventually, observation, status_of


def backend(client: TestClient, scope: str) -> dict[str, str]:
    registry = client.app.state.auth.registry  # type: ignore[attr-defined]
    registered, secret = registry.add_client(
        name="Subscriber", client_type="confidential-secret", redirect_uris=[], scope=scope
    )
    response = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(registered.client_id, secret),
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_notifications_stay_within_what_the_owner_may_read(
    auth_api: TestClient, receiver: Receiver
) -> None:
    writer = backend(auth_api, "system/*.cruds")
    owner = backend(auth_api, "system/Subscription.cruds system/Observation.rs?category=laboratory")
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": "lab",
        "status": "requested",
        "reason": "results",
        "criteria": "Observation?status=final",
        "channel": {
            "type": "rest-hook",
            "endpoint": receiver.url,
            "payload": "application/fhir+json",
        },
    }
    assert auth_api.put("/fhir/Subscription/lab", json=body, headers=owner).status_code == 201
    eventually(lambda: status_of(auth_api, "lab", owner) == "active")
    for obs_id, category in (("v1", "vital-signs"), ("l1", "laboratory"), ("v2", "vital-signs")):
        response = auth_api.put(
            f"/fhir/Observation/{obs_id}",
            json=observation(obs_id, "4548-4", category),
            headers=writer,
        )
        assert response.status_code == 201
    eventually(receiver.notifications, what="the laboratory notification")
    time.sleep(0.5)
    assert [r.resource()["id"] for r in receiver.notifications()] == ["l1"]


def test_only_the_owner_may_bind(auth_api: TestClient) -> None:
    owner = backend(auth_api, "system/Subscription.cruds system/Observation.rs")
    other = backend(auth_api, "system/Subscription.cruds system/Observation.rs")
    body = {
        "resourceType": "Subscription",
        "id": "mine",
        "status": "requested",
        "reason": "x",
        "criteria": "Observation?status=final",
        "channel": {"type": "websocket"},
    }
    assert auth_api.put("/fhir/Subscription/mine", json=body, headers=owner).status_code == 201
    eventually(lambda: status_of(auth_api, "mine", owner) == "active")
    no_token = auth_api.websocket_connect("/fhir/websocket")
    with pytest.raises(WebSocketDisconnect), no_token as ws:
        ws.receive_text()
    with auth_api.websocket_connect("/fhir/websocket", headers=other) as ws:
        ws.send_text("bind mine")
        assert "belongs to another client" in ws.receive_text()
    token = owner["Authorization"].split()[1]
    with auth_api.websocket_connect(f"/fhir/websocket?access_token={token}") as ws:
        ws.send_text("bind mine")
        assert ws.receive_text() == "bound mine"
