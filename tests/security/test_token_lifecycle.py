"""Class 7: token lifecycle. Removing a client ends every token it holds; a replayed
authorization code is refused and ends every token issued from it (RFC 6749 §4.1.2)."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

import json
from typing import Any

import pytest
from side_support import (  # noqa: F401 - fixtures are used by name
    BASE,
    backend,
    bearer,
    eventually,
    http,
    side_app,
    side_session_app,
    smart,
    user_token,
)
from starlette.testclient import TestClient

from interop.cli import main
from interop.settings import get_settings

SCOPE = "user/*.rs offline_access"


def refresh(http: TestClient, token: str) -> Any:
    return http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


def works(http: TestClient, access_token: str) -> bool:
    return http.get("/fhir/Patient", headers=bearer(access_token)).status_code == 200


def remove_with_cli(
    client_id: str, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`interop clients remove ID`, as an operator runs it (its own AuthServer, not the app's)."""
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    monkeypatch.setenv("INTEROP_BASE_URL", BASE)
    get_settings.cache_clear()
    try:
        assert main(["clients", "remove", client_id, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"removed": True}
    finally:
        get_settings.cache_clear()


def test_removed_clients_access_and_refresh_tokens_stop_working(
    http: TestClient,
    smart: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    body = user_token(smart, "dora", "physician", SCOPE)
    assert works(http, body["access_token"])
    remove_with_cli(body["client_id"], database_url, monkeypatch, capsys)
    eventually(lambda: not works(http, body["access_token"]), 10, "the token to stop working")
    response = http.get("/fhir/Patient", headers=bearer(body["access_token"]))
    assert response.status_code == 401
    assert refresh(http, body["refresh_token"]).status_code in (400, 401)
    rs_id, rs_secret = smart.client("system/token.introspect", "confidential-secret")
    for token in (body["access_token"], body["refresh_token"]):
        answer = http.post("/auth/introspect", data={"token": token}, auth=(rs_id, rs_secret))
        assert answer.json() == {"active": False}


def test_removed_backend_client_token_stops_working_at_once_in_the_server(
    http: TestClient, smart: Any
) -> None:
    headers, client_id, _ = backend(smart, "system/*.rs")
    assert http.get("/fhir/Patient", headers=headers).status_code == 200
    assert smart.server.remove_client(client_id)
    assert http.get("/fhir/Patient", headers=headers).status_code == 401


def test_other_clients_keep_working_when_one_is_removed(http: TestClient, smart: Any) -> None:
    kept, _, _ = backend(smart, "system/*.rs")
    _, gone, _ = backend(smart, "system/*.rs")
    assert smart.server.remove_client(gone)
    assert http.get("/fhir/Patient", headers=kept).status_code == 200


def test_replayed_authorization_code_is_refused_and_revokes_its_tokens(
    http: TestClient, smart: Any
) -> None:
    body = user_token(smart, "dora", "physician", SCOPE)
    assert works(http, body["access_token"])
    replay = http.post("/auth/token", data=body["_form"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.json()
    response = http.get("/fhir/Patient", headers=bearer(body["access_token"]))
    assert response.status_code == 401
    assert refresh(http, body["refresh_token"]).json()["error"] == "invalid_grant"


def test_code_replay_also_revokes_tokens_obtained_by_refreshing(
    http: TestClient, smart: Any
) -> None:
    body = user_token(smart, "dora", "physician", SCOPE)
    rotated = refresh(http, body["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    later = rotated.json()
    assert works(http, later["access_token"])
    assert http.post("/auth/token", data=body["_form"]).status_code == 400
    assert not works(http, later["access_token"])
    assert refresh(http, later["refresh_token"]).status_code == 400


def test_code_replay_does_not_touch_other_grants_of_the_same_app(
    http: TestClient, smart: Any
) -> None:
    first = user_token(smart, "dora", "physician", SCOPE)
    second = user_token(smart, "dora", "physician", SCOPE)
    assert http.post("/auth/token", data=first["_form"]).status_code == 400
    assert not works(http, first["access_token"])
    assert works(http, second["access_token"])


def test_revoking_a_refresh_token_ends_the_access_tokens_of_its_grant(
    http: TestClient, smart: Any
) -> None:
    body = user_token(smart, "dora", "physician", SCOPE)
    revoked = http.post(
        "/auth/revoke", data={"token": body["refresh_token"], "client_id": body["client_id"]}
    )
    assert revoked.status_code == 200
    assert not works(http, body["access_token"])
    assert refresh(http, body["refresh_token"]).status_code == 400
