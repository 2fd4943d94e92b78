"""Subscription notifications carry decimals exactly as they were sent."""

from __future__ import annotations

from starlette.testclient import TestClient
from subscription_helpers import Receiver, eventually, status_of


def test_notification_keeps_decimal_literals(api: TestClient, receiver: Receiver) -> None:
    subscription = {
        "resourceType": "Subscription",
        "id": "dec",
        "status": "requested",
        "reason": "weights",
        "criteria": "Observation?code=http://loinc.org|29463-7",
        "channel": {"type": "rest-hook", "endpoint": receiver.url,
                    "payload": "application/fhir+json"},
    }  # fmt: skip
    assert api.put("/fhir/Subscription/dec", json=subscription).status_code == 201
    eventually(lambda: status_of(api, "dec") == "active", what="handshake")
    body = b"""{"resourceType": "Observation", "id": "w1", "status": "final",
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
      "valueQuantity": {"value": 72.50, "unit": "kg"},
      "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 12345678901234567.8}}]}"""
    headers = {"Content-Type": "application/fhir+json"}
    assert api.put("/fhir/Observation/w1", content=body, headers=headers).status_code == 201
    (note,) = eventually(receiver.notifications, what="a notification")
    assert b'"value":72.50' in note.body
    assert b'"value":12345678901234567.8' in note.body
