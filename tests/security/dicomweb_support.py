"""Fixtures of the DICOMweb attack tests: a real Orthanc, the app with auth on, served by
uvicorn on a loopback port (an HTTP client library would normalise `..` and `//` away
before they reached the server; an attacker's raw request does not), and two patients.

Named apart from conftest.py (see tests/store_support.py). Test modules re-export the
fixtures they use: `from dicomweb_support import dicomweb_live, two_patients`.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from imaging_support import Orthanc, clear_database, free_port, imaging_settings, running_orthanc

from dicomweb_bridge.samples import StudySpec, study
from interop.app import create_app

CALLBACK_TOKEN = "orthanc-callback-secret"
HTTP_LINE = re.compile(r"\(http\) (GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S+)")
HEADER_LINE = re.compile(r"\(http\) HTTP header: \[([^\]]*)\]: \[(.*)\]")


@dataclass
class Live:
    """The app on a real socket, and the Orthanc behind it."""

    app: Any
    url: str
    port: int
    orthanc: Orthanc

    def token(self, scope: str, patient: str | None = None) -> dict[str, str]:
        context = {"patient": patient} if patient else None
        jwt = self.app.state.auth.tokens.access_token(
            client_id="attacker-app", subject="attacker", scope=scope, lifetime=300,
            context=context,
        )  # fmt: skip
        return {"Authorization": f"Bearer {jwt}"}

    def raw(self, method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request with the target sent byte for byte as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def orthanc_requests_during(self, action: Any) -> tuple[Any, list[tuple[str, str]]]:
        """Run `action`; return its result and every request Orthanc logged meanwhile."""
        result, text = self.orthanc_log_during(action)
        return result, [(m[1], m[2]) for m in HTTP_LINE.finditer(text)]

    def orthanc_headers_during(self, action: Any) -> tuple[Any, list[tuple[str, str]]]:
        """Run `action`; return its result and every request header Orthanc received
        meanwhile (besides those of the test's own closing request)."""
        result, text = self.orthanc_log_during(action)
        return result, [(m[1], m[2]) for m in HEADER_LINE.finditer(text)]

    def orthanc_log_during(self, action: Any) -> tuple[Any, str]:
        start = self.orthanc.log.stat().st_size
        result = action()
        sentinel = f"/dicom-web/studies/{uuid.uuid4().int}"  # Orthanc logs in order
        with self.orthanc.client() as pacs:
            pacs.get(sentinel)
        deadline = time.monotonic() + 10
        while True:
            text = self.orthanc.log.read_bytes()[start:].decode("utf-8", "replace")
            if sentinel in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return result, text.split(sentinel)[0]


@pytest.fixture(scope="session")
def dicomweb_orthanc() -> Iterator[Orthanc]:
    with running_orthanc() as server:
        with server.client() as pacs:  # Orthanc logs each request it receives, with headers
            pacs.put("/tools/log-level-http", content="trace").raise_for_status()
        yield server


@pytest.fixture(scope="session")
def dicomweb_live(database_url: str, dicomweb_orthanc: Orthanc) -> Iterator[Live]:
    settings = imaging_settings(database_url, dicomweb_orthanc, auth="on", auth_audit=False,
                                orthanc_callback_token=CALLBACK_TOKEN)  # fmt: skip
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="dicomweb-live", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the live test server did not start")
        time.sleep(0.05)
    try:
        yield Live(app, f"http://127.0.0.1:{port}", port, dicomweb_orthanc)
    finally:
        server.should_exit = True
        thread.join(15)
        app.state.store.engine.dispose()


@dataclass
class Patient:
    id: str
    patient_id: str
    study: str
    series: str
    instance: str


@pytest.fixture
def two_patients(dicomweb_live: Live) -> dict[str, Patient]:
    """Patients A and B, each with one two-frame CT study in Orthanc, synced to FHIR."""
    app = dicomweb_live.app
    dicomweb_live.orthanc.clear()
    clear_database(app)
    bridge = app.state.imaging
    out = {}
    for name in ("a", "b"):
        pid = f"PX-{name.upper()}-{uuid.uuid4().hex[:6]}"
        datasets = study(StudySpec(patient_id=pid, series=(("CT", 1),), frames=2))
        bridge.pacs.stow(datasets)
        synced = bridge.syncer.sync_study(str(datasets[0].StudyInstanceUID))
        res = orjson.loads(app.state.store.read("ImagingStudy", synced.resource_id).body)
        first = datasets[0]
        out[name] = Patient(res["subject"]["reference"].split("/")[1], pid,
                            str(first.StudyInstanceUID), str(first.SeriesInstanceUID),
                            str(first.SOPInstanceUID))  # fmt: skip
    return out
