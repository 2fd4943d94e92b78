"""Operator endpoints under /hl7."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from interop.app import create_app
from interop.settings import Settings

MSG = (
    b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A04|H1|P|2.5.1\r"
    b"PID|1||77^^^HOSP^MR||Doe^John||19700101|M\r"
)


def test_submit_list_show(client: TestClient) -> None:
    resp = client.post("/hl7/messages", content=MSG)
    assert resp.status_code == 201
    assert b"MSA|AA|H1" in resp.content
    pk = resp.headers["X-Message-Id"]
    listed = client.get("/hl7/messages", params={"status": "processed"}).json()["messages"]
    assert [m["controlId"] for m in listed] == ["H1"]
    shown = client.get(f"/hl7/messages/{pk}").json()
    assert shown["type"] == "ADT^A04"
    assert shown["segments"][1][0] == "PID"
    assert any(r.startswith("Patient/") for r in shown["resources"])
    assert client.get("/hl7/messages/999999").status_code == 404
    assert client.get("/hl7/messages", params={"_count": "x"}).status_code == 400
    bad = client.post("/hl7/messages", content=b"not hl7")
    assert bad.status_code == 201 and b"MSA|AR" in bad.content


def test_operator_endpoints_need_auth(app: Any, database_url: str) -> None:
    secured = create_app(Settings(database_url=database_url, auth="on"), migrate=False)
    with TestClient(secured) as c:
        assert c.get("/hl7/messages").status_code == 401
        assert c.post("/hl7/messages", content=MSG).status_code == 401
    secured.state.store.engine.dispose()


def test_cli_list_show_replay(
    client: TestClient, database_url: str, monkeypatch: Any, capsys: Any
) -> None:
    import json

    from interop.cli import main
    from interop.settings import get_settings

    bad = MSG.replace(b"77^^^HOSP^MR", b"")
    pk = client.post("/hl7/messages", content=bad).headers["X-Message-Id"]
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert main(["hl7", "list", "--status", "failed", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["messages"]
        assert [m["id"] for m in listed] == [int(pk)]
        assert main(["hl7", "show", pk, "--json"]) == 0
        assert "PID-3" in json.loads(capsys.readouterr().out)["error"]
        assert main(["hl7", "replay", "--failed", "--json"]) == 1  # still failing: not fixed
        assert json.loads(capsys.readouterr().out)["replayed"] == {pk: "failed"}
    finally:
        get_settings.cache_clear()
