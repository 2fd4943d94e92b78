"""Helpers for the imaging tests, around a real Orthanc (with its DICOMweb plugin).

Started on free loopback ports with a temporary storage folder, `RemoteAccessAllowed`
false and an HTTP user; tests talk to 127.0.0.1 only. Without Orthanc the tests are
skipped locally; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from store_support import clear_tables

from interop.settings import Settings

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
USER, PASSWORD = "interop", "s3cret-orthanc"
LUA = Path(__file__).resolve().parents[2] / "dicomweb_bridge" / "orthanc" / "on_deleted.lua"


@dataclass
class Orthanc:
    url: str
    dicomweb: str
    dicom_port: int
    aet: str
    callback_port: int
    storage: Path

    @property
    def auth(self) -> tuple[str, str]:
        return USER, PASSWORD

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=30)

    def clear(self) -> None:
        """Delete every patient; the change log keeps running (tests start at `last`)."""
        with self.client() as http:
            for pid in http.get("/patients").json():
                http.delete(f"/patients/{pid}")

    def last_change(self) -> int:
        with self.client() as http:
            return int(http.get("/changes", params={"last": ""}).json()["Last"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"Orthanc is required in CI: {reason}")
    pytest.skip(f"{reason}; install with 'apt-get install orthanc orthanc-dicomweb dcmtk'")


BASE = "http://testserver/fhir"


def imaging_settings(database_url: str, server: Orthanc, **extra: object) -> Settings:
    return Settings(database_url=database_url, base_url=BASE, orthanc_url=server.url,
                    orthanc_user=USER, orthanc_password=PASSWORD,  # type: ignore[arg-type]
                    imaging_reconcile_seconds=0, **extra)  # type: ignore[arg-type]  # fmt: skip


def clear_database(app) -> None:  # type: ignore[no-untyped-def]
    clear_tables(app.state.store.engine, keep={"auth_signing_keys"})


def storescu(server: Orthanc, files: list[Path]) -> None:
    """Send files with dcmtk's storescu, like a modality would."""
    if shutil.which("storescu") is None:
        _missing("storescu (dcmtk) is not installed")
    done = subprocess.run(
        ["storescu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def wait_for(check, timeout: float = 20.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
