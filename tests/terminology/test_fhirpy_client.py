"""A third-party Python client (fhirpy) calls the terminology operations of a real server
over HTTP with a backend-services token: `$expand` by GET and POST, `$validate-code`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fhirpy import SyncFHIRClient

from interop.app import create_app
from interop.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(session_app: Any, database_url: str) -> Iterator[tuple[Any, str]]:
    """A secured server on a real port (the session app has migrated the database)."""
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    app = create_app(Settings(database_url=database_url, auth="on", base_url=f"{root}/fhir"),
                     migrate=False)  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield app, root
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.store.engine.dispose()


def _token(app: Any, root: str, scope: str) -> str:
    client, secret = app.state.auth.registry.add_client(
        name="terminology user", client_type="confidential-secret", redirect_uris=[], scope=scope
    )
    response = httpx.post(
        f"{root}/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client.client_id, secret or ""),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_fhirpy_expands_and_validates(live: tuple[Any, str]) -> None:
    app, root = live
    token = _token(app, root, "system/ValueSet.rs system/CodeSystem.rs")
    fhir = SyncFHIRClient(f"{root}/fhir", authorization=f"Bearer {token}")
    gender = fhir.execute(
        "ValueSet/$expand",
        method="get",
        params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"},
    )
    assert sorted(c["code"] for c in gender["expansion"]["contains"]) == [
        "female", "male", "other", "unknown",
    ]  # fmt: skip
    paged = fhir.execute(
        "ValueSet/v2-0203/$expand",
        data={"resourceType": "Parameters", "parameter": [
            {"name": "count", "valueInteger": 10}, {"name": "offset", "valueInteger": 5}]},
    )  # fmt: skip
    assert len(paged["expansion"]["contains"]) == 10 and paged["expansion"]["offset"] == 5
    checked = fhir.execute(
        "ValueSet/observation-status/$validate-code",
        method="get",
        params={"system": "http://hl7.org/fhir/observation-status", "code": "bogus"},
    )
    result = {p["name"]: p for p in checked["parameter"]}
    assert result["result"]["valueBoolean"] is False
    looked = fhir.execute(
        "CodeSystem/$lookup",
        method="get",
        params={"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": "LL"},
    )
    assert any(p["name"] == "display" for p in looked["parameter"])


def test_fhirpy_resolves_the_declared_operation_definitions(live: tuple[Any, str]) -> None:
    """What a client does with the CapabilityStatement: follow each terminology operation's
    `definition` to its OperationDefinition, by canonical URL and by id."""
    app, root = live
    token = _token(app, root, "system/OperationDefinition.rs")
    fhir = SyncFHIRClient(f"{root}/fhir", authorization=f"Bearer {token}")
    statement = httpx.get(f"{root}/fhir/metadata").json()
    declared = {
        (r["type"], op["name"]): op["definition"]
        for r in statement["rest"][0]["resource"]
        for op in r.get("operation", [])
        if r["type"] in ("ValueSet", "CodeSystem", "ConceptMap") and op["name"] != "validate"
    }
    assert set(declared) == {("ValueSet", "expand"), ("ValueSet", "validate-code"),
                             ("CodeSystem", "lookup"), ("CodeSystem", "subsumes"),
                             ("ConceptMap", "translate")}  # fmt: skip
    for (res_type, name), url in declared.items():
        found = fhir.resources("OperationDefinition").search(url=url).fetch_all()
        assert [d["code"] for d in found] == [name]
        assert res_type in found[0]["resource"]
        again = fhir.reference("OperationDefinition", found[0]["id"]).to_resource()
        assert again["url"] == url
