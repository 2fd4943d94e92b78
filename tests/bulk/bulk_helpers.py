"""Helpers for the bulk tests: a backend-services token, polling, NDJSON download."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def backend_token(client: TestClient, scope: str) -> str:
    """A backend-services client registered with `scope`, and its client_credentials token."""
    registry = client.app.state.auth.registry  # type: ignore[attr-defined]
    registered, secret = registry.add_client(
        name="Warehouse", client_type="confidential-secret", redirect_uris=[], scope=scope
    )
    response = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(registered.client_id, secret),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def wait_for(client: TestClient, status_url: str, headers: dict[str, str] | None = None) -> Any:
    """Poll a status URL until the job is no longer running; returns the last response."""
    deadline = time.monotonic() + 60
    while True:
        response = client.get(status_url, headers=headers or {})
        if response.status_code != 202:
            return response
        assert "X-Progress" in response.headers and "Retry-After" in response.headers
        assert time.monotonic() < deadline, "bulk job did not finish"
        time.sleep(0.05)


def ndjson(client: TestClient, url: str, headers: dict[str, str] | None = None) -> list[Any]:
    import orjson

    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]
