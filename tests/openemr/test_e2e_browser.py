# ruff: noqa: E501 - browser scripts read best on one line
"""End to end in headless Chromium: a clinician signs in to (simulated) OpenEMR only, opens the
patient dashboard, and the hosted app inside its iframe (a page using the JavaScript
`fhirclient` library) reads the patient's ImagingStudy from our FHIR API with the token it got.

Needs Debian's `chromium` and the npm packages of tests/e2e (scripts/setup-env); in CI (CI=true) their absence
fails the run instead of skipping. The browser is driven over the DevTools protocol.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from ci_support import IN_CI
from oe_accounts import CLIENT_ID, bridge_settings
from simulator import OpenEmrSimulator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from store_support import clear_tables

from fhir_server.api.bundles import apply_transaction
from interop.app import create_app
from interop.settings import Settings
from openemr_bridge.routes import build_syncer

HERE = Path(__file__).parent / "e2e"
# the pinned fhirclient that scripts/setup-env installs for the browser tests (tests/e2e)
FHIRCLIENT = HERE.parents[1] / "e2e" / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
CLINICIAN, CLINICIAN_PASSWORD = "drjones", "clinician-pass-2"


def _require(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} not available")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """An ASGI app on a loopback port, in a thread."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def hosted_app(client_id: str, reports: list[dict[str, Any]]) -> Starlette:
    """The SMART app this server hosts for OpenEMR users: two pages and fhirclient."""

    async def page(request: Request) -> Response:
        name = request.path_params["name"]
        body = (HERE / name).read_text().replace("__CLIENT_ID__", client_id)
        return HTMLResponse(body)

    async def script(_: Request) -> Response:
        return FileResponse(FHIRCLIENT, media_type="application/javascript")

    async def report(request: Request) -> Response:
        reports.append(json.loads(await request.body()))
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/fhir-client.js", script),
            Route("/report", report, methods=["POST"]),
            Route("/{name:path}", page),
        ]
    )


class Chromium:
    """Headless Chromium, driven over the DevTools protocol (one page)."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="interop-chromium-")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.time() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page = next(t for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                return message

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("result", {}).get("value")

    def wait_for(self, expression: str, seconds: float = 20) -> Any:
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Chromium]:
    _require(shutil.which("chromium") is not None, "Debian's chromium")
    _require(FHIRCLIENT.exists(), "fhirclient (npm ci in tests/e2e, done by scripts/setup-env)")
    chromium = Chromium()
    yield chromium
    chromium.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_clinician_signs_in_to_openemr_only_and_the_app_reads_imaging(
    database_url: str, sim: OpenEmrSimulator, browser: Chromium
) -> None:
    our_port, app_port = free_port(), free_port()
    ours = f"http://127.0.0.1:{our_port}"
    hosted = f"http://127.0.0.1:{app_port}"
    app = create_app(
        Settings(database_url=database_url, auth="on", base_url=f"{ours}/fhir",
                 mllp_port=0, **bridge_settings(sim.base))
    )  # fmt: skip
    clear_tables(app.state.store.engine, keep={"auth_signing_keys"})
    client, _ = app.state.auth.registry.add_client(
        name="Imaging viewer", client_type="public", redirect_uris=[f"{hosted}/index.html"],
        scope="launch openid fhirUser patient/*.rs", launch_url=f"{hosted}/launch.html",
    )  # fmt: skip
    app.state.openemr_launch.settings.app_client = client.client_id
    oe_client = sim.clients[CLIENT_ID]
    oe_client.redirect_uris = [f"{ours}/openemr/callback"]
    oe_client.initiate_login_uri = f"{ours}/openemr/launch"
    sim.add_user(CLINICIAN, CLINICIAN_PASSWORD)
    row = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    syncer = build_syncer(app.state.runtime.openemr_settings(), app.state.context)
    assert syncer is not None
    _, patient_id = syncer.sync_patient(row["uuid"])
    study = {"resourceType": "ImagingStudy", "status": "available",
             "subject": {"reference": f"Patient/{patient_id}"}}  # fmt: skip
    apply_transaction(app.state.context, {"resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": study, "request": {"method": "POST", "url": "ImagingStudy"}}]})  # fmt: skip
    reports: list[dict[str, Any]] = []
    with Served(app, our_port), Served(hosted_app(client.client_id, reports), app_port):
        dashboard = "/interface/patient_file/summary/demographics.php?" + urlencode(
            {"puuid": row["uuid"], "client_id": CLIENT_ID}
        )
        login = f"{sim.base}/interface/login/login.php?" + urlencode({"next": dashboard})
        browser.call("Page.navigate", url=login)
        browser.wait_for("!!document.querySelector('input[name=authUser]')")
        browser.evaluate(
            f"document.querySelector('input[name=authUser]').value = {json.dumps(CLINICIAN)};"
            f"document.querySelector('input[name=clearPass]').value = {json.dumps(CLINICIAN_PASSWORD)};"
            "document.querySelector('form').submit(); true"
        )  # the only sign-in: at OpenEMR
        deadline = time.time() + 90
        while not reports and time.time() < deadline:
            time.sleep(0.2)
        assert reports, (
            "the hosted app never reported ("
            + str(browser.evaluate("document.body.innerHTML"))
            + ")"
        )
    result = reports[0]
    assert "error" not in result, result
    assert result["patient"] == patient_id
    assert result["iss"] == f"{ours}/fhir"
    assert result["total"] == 1
    assert len(result["ids"]) == 1
    app.state.store.engine.dispose()
