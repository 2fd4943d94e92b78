"""Fixtures for the AI worker: a real Orthanc with DICOMweb, real Redis, phantom series.

Orthanc and Redis are real peers here (DESIGN.md): without them the tests skip locally and
fail in CI (CI=true). Orthanc listens on a free port, HTTP only (no DICOM port), loopback only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REDIS_URL = os.environ.get("INTEROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available; set CI=true to make this a failure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    url: str
    user: str
    password: str

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def stow(self, datasets: list[Dataset]) -> None:
        session = requests.Session()
        session.auth = (self.user, self.password)
        DICOMwebClient(self.dicomweb, session=session).store_instances(datasets)


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


BASE = "http://testserver/fhir"


def ai_settings(database_url: str, orthanc: Orthanc, **extra: object):  # type: ignore[no-untyped-def]
    from interop.settings import Settings

    values: dict[str, object] = {
        "database_url": database_url,
        "auth": "off",
        "base_url": BASE,
        "dicomweb_url": orthanc.dicomweb,
        "orthanc_user": orthanc.user,
        "orthanc_password": orthanc.password,
        "ai_rules": [{"model": "ct-classical", "modality": "CT"}],
        "ai_lease_seconds": 3.0,
        "ai_retry_backoff": 0.2,
        "ai_max_retries": 2,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


def clear_tables(app) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from fhir_server.store.models import metadata

    engine = app.state.store.engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


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


def post(client, resource: dict) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict = response.json()
    return created


def upload_study(client, orthanc: Orthanc, datasets: list[Dataset], mrn: str = "MRN1"):  # type: ignore[no-untyped-def]
    """STOW the series to Orthanc and create its Patient and ImagingStudy in our store (the
    imaging bridge does this in production)."""
    orthanc.stow(datasets)
    first = datasets[0]
    patient = post(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:mrn", "value": mrn}],
            "name": [{"family": "Phantom", "given": ["Test"]}],
        },
    )
    study = post(
        client,
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [
                {"system": "urn:dicom:uid", "value": f"urn:oid:{first.StudyInstanceUID}"}
            ],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
            "description": str(first.StudyDescription),
            "numberOfSeries": 1,
            "numberOfInstances": len(datasets),
            "series": [
                {
                    "uid": str(first.SeriesInstanceUID),
                    "modality": {
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": "CT",
                    },
                    "bodySite": {
                        "system": "http://snomed.info/sct",
                        "code": "51185008",
                        "display": "CHEST",
                    },  # fmt: skip
                    "numberOfInstances": len(datasets),
                }
            ],
        },
    )
    return patient, study
