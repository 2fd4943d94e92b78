"""rest-hook Subscriptions: handshake, exactly the matching notifications, payload and headers,
retries while the receiver is down, error status, and recovery."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient
from subscription_helpers import Receiver, eventually, observation, status_of


def subscription(sub_id: str, endpoint: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "id": sub_id,
        "status": "requested",
        "reason": "HbA1c results",
        "criteria": "Observation?code=http://loinc.org|4548-4",
        "channel": {"type": "rest-hook", "endpoint": endpoint, **channel},
    }


def test_only_matching_changes_notify(api: TestClient, receiver: Receiver) -> None:
    body = subscription(
        "s1",
        receiver.url,
        payload="application/fhir+json",
        header=["Authorization: Bearer hook-secret"],
    )
    assert api.put("/fhir/Subscription/s1", json=body).status_code == 201
    eventually(lambda: status_of(api, "s1") == "active", what="handshake")
    (handshake,) = receiver.received
    assert handshake.event == "handshake" and handshake.body == b""
    api.put("/fhir/Observation/m1", json=observation("m1", "4548-4"))
    api.put("/fhir/Observation/other", json=observation("other", "2345-7"))
    api.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    api.put("/fhir/Observation/m2", json=observation("m2", "4548-4"))
    changed = observation("m1", "4548-4")
    changed["valueQuantity"]["value"] = 8.0
    api.put("/fhir/Observation/m1", json=changed)
    eventually(lambda: len(receiver.notifications()) >= 3, what="three notifications")
    time.sleep(0.5)  # nothing else may arrive
    got = receiver.notifications()
    assert [(r.resource()["id"], r.resource()["meta"]["versionId"]) for r in got] == [
        ("m1", "1"),
        ("m2", "1"),
        ("m1", "2"),
    ]
    assert all(r.headers["authorization"] == "Bearer hook-secret" for r in got)
    assert all(r.headers["x-subscription-id"] == "s1" for r in got)
    assert all(r.headers["content-type"] == "application/fhir+json" for r in got)


def test_empty_payload_sends_no_body(api: TestClient, receiver: Receiver) -> None:
    api.put("/fhir/Subscription/s2", json=subscription("s2", receiver.url))
    eventually(lambda: status_of(api, "s2") == "active")
    new = observation("ignored", "4548-4")
    del new["id"]
    assert api.post("/fhir/Observation", json=new).status_code == 201
    (note,) = eventually(receiver.notifications, what="a notification")
    assert note.body == b""


def test_a_receiver_that_is_down_gets_them_later(api: TestClient, receiver: Receiver) -> None:
    api.put(
        "/fhir/Subscription/s3",
        json=subscription("s3", receiver.url, payload="application/fhir+json"),
    )
    eventually(lambda: status_of(api, "s3") == "active")
    receiver.stop()
    api.put("/fhir/Observation/late1", json=observation("late1", "4548-4"))
    api.put("/fhir/Observation/late2", json=observation("late2", "4548-4"))
    eventually(lambda: status_of(api, "s3") == "error", what="error status")
    error = api.get("/fhir/Subscription/s3").json()["error"]
    assert "deliveries failed" in error
    writes = time.monotonic()
    api.put("/fhir/Observation/late3", json=observation("late3", "4548-4"))
    assert time.monotonic() - writes < 2  # writes never wait for deliveries
    receiver.start()  # back on the same port
    eventually(lambda: len(receiver.notifications()) == 3, what="the backlog")
    assert [r.resource()["id"] for r in receiver.notifications()] == ["late1", "late2", "late3"]
    eventually(lambda: status_of(api, "s3") == "active", what="active again")
    assert "error" not in api.get("/fhir/Subscription/s3").json()


def test_a_failed_handshake_sets_error(api: TestClient, receiver: Receiver) -> None:
    url = receiver.url
    receiver.stop()
    api.put("/fhir/Subscription/s4", json=subscription("s4", url))
    eventually(lambda: status_of(api, "s4") == "error")
    assert api.get("/fhir/Subscription/s4").json()["error"].startswith("handshake failed")
    receiver.start()
    api.put("/fhir/Subscription/s4", json=subscription("s4", url))  # the client asks again
    eventually(lambda: status_of(api, "s4") == "active")


def test_off_and_deleted_subscriptions_stop_notifying(api: TestClient, receiver: Receiver) -> None:
    api.put("/fhir/Subscription/s5", json=subscription("s5", receiver.url))
    eventually(lambda: status_of(api, "s5") == "active")
    off = subscription("s5", receiver.url) | {"status": "off"}
    api.put("/fhir/Subscription/s5", json=off)
    eventually(lambda: status_of(api, "s5") == "off")
    time.sleep(0.3)
    api.put("/fhir/Observation/x1", json=observation("x1", "4548-4"))
    time.sleep(0.8)
    assert receiver.notifications() == []


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"criteria": "Observation?bogus=1"}, "bogus"),
        ({"criteria": "NotAType?code=1"}, "resource type"),
        ({"channel": {"type": "email", "endpoint": "mailto:a@b.c"}}, "not supported"),
        ({"channel": {"type": "rest-hook"}}, "endpoint"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://x", "payload": "text/xml"}},
            "payload",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://x", "header": ["nocolon"]}},
            "header",
        ),
    ],
)
def test_bad_subscriptions_are_400(api: TestClient, change: dict[str, Any], text: str) -> None:
    body = subscription("bad", "http://127.0.0.1:9/hook") | change
    response = api.post("/fhir/Subscription", json=body)
    assert response.status_code == 400, response.text
    assert text in response.json()["issue"][0]["diagnostics"]


def test_a_subscription_past_its_end_does_not_notify(api: TestClient, receiver: Receiver) -> None:
    body = subscription("s6", receiver.url) | {"end": "2020-01-01T00:00:00Z"}
    assert api.put("/fhir/Subscription/s6", json=body).status_code == 201
    time.sleep(0.8)
    assert receiver.received == []  # no handshake either
    assert status_of(api, "s6") == "requested"


def test_changes_from_before_the_subscription_do_not_notify(
    api: TestClient, receiver: Receiver
) -> None:
    """Observations written before anyone subscribed to them (the consumer skipped them
    then) are not notified once a subscription for them goes live; later ones are."""
    for i in range(3):
        api.put(f"/fhir/Observation/old{i}", json=observation(f"old{i}", "4548-4"))
    time.sleep(0.2)
    api.put(
        "/fhir/Subscription/s9",
        json=subscription("s9", receiver.url, payload="application/fhir+json"),
    )
    eventually(lambda: status_of(api, "s9") == "active", what="handshake")
    api.put("/fhir/Observation/new", json=observation("new", "4548-4"))
    eventually(lambda: len(receiver.notifications()) >= 1, what="the new Observation")
    time.sleep(0.5)  # nothing else may arrive
    assert [r.resource()["id"] for r in receiver.notifications()] == ["new"]
