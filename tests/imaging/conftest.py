"""Fixtures: a real Orthanc per session (see imaging_support), an app bridged to it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imaging_support import (
    LUA,
    ORTHANC,
    PASSWORD,
    PLUGIN,
    USER,
    Orthanc,
    _missing,
    clear_database,
    free_port,
    imaging_settings,
)  # fmt: skip
from starlette.testclient import TestClient

from interop.app import create_app


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[Orthanc]:
    if not (os.path.exists(ORTHANC) and os.path.exists(PLUGIN)):
        _missing("Orthanc or its DICOMweb plugin is not installed")
    # not under pytest's basetemp: other pytest runs on the machine rotate those away
    folder = Path(tempfile.mkdtemp(prefix="interop-orthanc-"))
    http_port, dicom_port, callback_port = free_port(), free_port(), free_port()
    config = {
        "Name": "interop-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "Plugins": [PLUGIN],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "StableAge": 1,
        "SaveJobs": False,
        "OverwriteInstances": True,
        "LuaScripts": [str(LUA)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }  # fmt: skip
    (folder / "orthanc.json").write_text(json.dumps(config))
    env = dict(os.environ)
    env["INTEROP_CALLBACK_URL"] = f"http://127.0.0.1:{callback_port}/imaging/orthanc/deleted"
    env["INTEROP_ORTHANC_CALLBACK_TOKEN"] = "callback-token"
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log,
                            env=env)  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/system", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _missing(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.1)
    try:
        yield Orthanc(url, f"{url}/dicom-web", dicom_port, "ORTHANC", callback_port, folder)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if os.environ.get("INTEROP_KEEP_ORTHANC") is None:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    orthanc_server.clear()
    return orthanc_server


@pytest.fixture(scope="session")
def imaging_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="off",
                                      orthanc_callback_token="callback-token"))  # fmt: skip
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_app(imaging_session_app, orthanc: Orthanc):  # type: ignore[no-untyped-def]
    clear_database(imaging_session_app)
    bridge = imaging_session_app.state.imaging
    bridge.state.set_cursor("orthanc-changes", str(orthanc.last_change()))
    return imaging_session_app


@pytest.fixture
def imaging_client(imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(imaging_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def imaging_auth_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="on", auth_audit=False))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_auth_client(imaging_auth_session_app, imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """Auth on, same database and Orthanc as `imaging_app` (which cleared both)."""
    with TestClient(imaging_auth_session_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def imaging_audited_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="on", auth_audit=True))
    yield app
    app.state.audit.close()
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_audited_client(imaging_audited_session_app, imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(imaging_audited_session_app, base_url="http://testserver") as client:
        yield client
