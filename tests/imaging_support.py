"""Helpers for the imaging tests, around a real Orthanc (with its DICOMweb plugin).

Started on free loopback ports with a temporary storage folder, `RemoteAccessAllowed`
false and an HTTP user; tests talk to 127.0.0.1 only. Without Orthanc the tests are
skipped locally; in CI (CI=true) that is a failure. In tests/ (on sys.path through the root
conftest) so that tests/imaging and tests/security share it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from ci_support import unavailable
from store_support import clear_tables

from interop.settings import Settings

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "interop", "s3cret-orthanc"
LUA = Path(__file__).resolve().parents[1] / "dicomweb_bridge" / "orthanc" / "on_deleted.lua"


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

    @property
    def log(self) -> Path:
        """Orthanc's own log (with `log-level-http` verbose: every request it received)."""
        return self.storage / "orthanc.log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(reason: str) -> None:
    unavailable(f"Orthanc: {reason}; install with 'apt-get install orthanc orthanc-dicomweb dcmtk'")


@contextmanager
def running_orthanc() -> Iterator[Orthanc]:
    """A fresh Orthanc for a test session, stopped (and its folder removed) afterwards."""
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
