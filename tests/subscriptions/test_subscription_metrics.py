"""Subscription deliveries and failures in /metrics, and the waiting queue from the database."""

from __future__ import annotations

from typing import Any

from metrics_support import value
from starlette.testclient import TestClient
from subscription_helpers import Receiver, eventually, observation, status_of

from fhir_server import metrics
from interop.metrics import DatabaseCollector


def scrape(api: TestClient) -> str:
    app: Any = api.app
    return metrics.render([DatabaseCollector(app.state.store.engine)])[0].decode()


def test_failures_then_deliveries_are_counted(api: TestClient, receiver: Receiver) -> None:
    body = {
        "resourceType": "Subscription", "id": "m1", "status": "requested", "reason": "metrics",
        "criteria": "Observation?code=http://loinc.org|4548-4",
        "channel": {"type": "rest-hook", "endpoint": receiver.url},
    }  # fmt: skip
    assert api.put("/fhir/Subscription/m1", json=body).status_code == 201
    eventually(lambda: status_of(api, "m1") == "active", what="handshake")
    hook = {"channel": "rest-hook"}
    before = scrape(api)
    delivered = value(before, "interop_subscription_deliveries_total", **hook, outcome="delivered")
    failed = value(before, "interop_subscription_deliveries_total", **hook, outcome="failed")
    receiver.stop()
    api.put("/fhir/Observation/x1", json=observation("x1", "4548-4"))
    eventually(
        lambda: value(scrape(api), "interop_subscription_deliveries_total", **hook,
                      outcome="failed") > failed,
        what="a failure counted",
    )  # fmt: skip
    waiting = scrape(api)
    assert value(waiting, "interop_subscription_queue") == 1
    assert value(waiting, "interop_subscription_queue_retrying") == 1
    receiver.start()
    eventually(lambda: len(receiver.notifications()) == 1, what="the late notification")
    after = eventually(
        lambda: (
            (t := scrape(api))
            and value(t, "interop_subscription_deliveries_total", **hook, outcome="delivered")
            == delivered + 1
            and t
        ),
        what="the delivery counted",
    )
    assert value(after, "interop_subscription_queue") == 0
