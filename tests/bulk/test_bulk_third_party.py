"""A third-party client (npm `fhir-kit-client`, under Node) reads an export from a real server
over HTTP, with a backend-services token: kick-off, polling, manifest, files."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from ci_support import IN_CI

from interop.app import create_app
from interop.settings import Settings

JS = Path(__file__).parent / "js"


def _node_client() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if IN_CI:
            pytest.fail("node and npm are needed for the third-party client test")
        pytest.skip("node/npm not installed")
    if not (JS / "node_modules" / "fhir-kit-client").is_dir():  # scripts/setup-env: npm ci
        if IN_CI:
            pytest.fail("fhir-kit-client is not installed in tests/bulk/js (scripts/setup-env)")
        pytest.skip("fhir-kit-client not installed: run scripts/setup-env")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(bulk_auth_session_app: Any, database_url: str, tmp_path: Path) -> Iterator[Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    settings = Settings(database_url=database_url, auth="on", base_url=base, bulk_dir=str(tmp_path),
                        outbound_allow_import="127.0.0.1")  # fmt: skip
    app = create_app(settings)
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
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.store.engine.dispose()


def test_fhir_kit_client_reads_an_export(live_server: Any, auth_api: Any) -> None:
    _node_client()
    app, root = live_server
    scope = "system/*.cruds"
    client, secret = app.state.auth.registry.add_client(
        name="Registry", client_type="confidential-secret", redirect_uris=[], scope=scope
    )
    with httpx.Client(base_url=root, timeout=30) as http:
        token = http.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(client.client_id, secret),
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        for pid in ("k1", "k2"):
            patient = {"resourceType": "Patient", "id": pid, "gender": "other"}
            assert http.put(f"/fhir/Patient/{pid}", json=patient, headers=auth).status_code == 201
        obs = {
            "resourceType": "Observation",
            "id": "ko",
            "status": "final",
            "code": {"text": "pulse"},
            "subject": {"reference": "Patient/k1"},
        }
        assert http.put("/fhir/Observation/ko", json=obs, headers=auth).status_code == 201
    run = subprocess.run(
        ["node", str(JS / "export.mjs"), f"{root}/fhir", token, "_type=Patient,Observation"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["manifest"]["requiresAccessToken"] is True
    assert sorted(r["id"] for r in result["lines"]["Patient"]) == ["k1", "k2"]
    assert [r["id"] for r in result["lines"]["Observation"]] == ["ko"]
