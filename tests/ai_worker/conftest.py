"""Fixtures for the AI worker: a real Orthanc with DICOMweb, real Redis, phantom series.

Orthanc and Redis are real peers here (DESIGN.md): without them the tests skip locally and
fail in CI (CI=true). Orthanc listens on a free port, HTTP only (no DICOM port), loopback only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ai_support import (
    DICOMWEB_PLUGIN,
    ORTHANC,
    REDIS_URL,
    Orthanc,
    ai_settings,
    clear_tables,
    free_port,
    missing,
)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not (Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()):
        missing("Orthanc with the DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)")
    tmp = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "ai-test",
        "StorageDirectory": str(tmp / "db"),
        "IndexDirectory": str(tmp / "db"),
        "Plugins": [DICOMWEB_PLUGIN],
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"interop": "secret"},
        "DicomServerEnabled": False,
        "StableAge": 2,
        "SaveJobs": False,
        "OverwriteInstances": True,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([ORTHANC, str(tmp / "orthanc.json")], stdout=log, stderr=log)
    server = Orthanc(f"http://127.0.0.1:{port}", "interop", "secret")
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{server.url}/system", auth=("interop", "secret"), timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield server
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing(f"Redis at {REDIS_URL} ({exc})")
    return REDIS_URL


@pytest.fixture(scope="session")
def ojph() -> None:
    if shutil.which("ojph_compress") is None:
        missing("ojph_compress (apt-get install openjph-tools)")


@pytest.fixture(scope="session")
def ai_session_app(database_url: str, orthanc: Orthanc):  # type: ignore[no-untyped-def]
    from interop.app import create_app

    app = create_app(ai_settings(database_url, orthanc))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def ai_client(ai_session_app):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    clear_tables(ai_session_app)
    with TestClient(ai_session_app, base_url="http://testserver") as client:
        yield client
