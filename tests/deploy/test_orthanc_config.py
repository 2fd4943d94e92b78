"""The Orthanc configuration shipped in deploy/orthanc/, run by a real Orthanc the way
deploy/orthanc/start.sh runs it (a folder with the shipped orthanc.json and a credentials
file made from the secret): DICOMweb answers, and a deleted study reaches the server through
the Lua hook with the callback token read from INTEROP_ORTHANC_CALLBACK_TOKEN_FILE."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from imaging_support import LUA, ORTHANC, PLUGIN, _missing, free_port
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "orthanc" / "orthanc.json"


class Callbacks(BaseHTTPRequestHandler):
    received: list[tuple[str, str, dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_shipped_config_serves_dicomweb_and_calls_back_deletions(tmp_path: Path) -> None:
    if not (os.path.exists(ORTHANC) and os.path.exists(PLUGIN)):
        _missing("Orthanc or its DICOMweb plugin is not installed")
    config = json.loads(SHIPPED.read_text())
    http_port, dicom_port = free_port(), free_port()
    config.update(  # only what differs between a container and this test machine
        StorageDirectory=str(tmp_path / "db"), IndexDirectory=str(tmp_path / "db"),
        HttpPort=http_port, DicomPort=dicom_port, RemoteAccessAllowed=False,
        Plugins=[str(Path(PLUGIN).parent)], LuaScripts=[str(LUA)],
    )  # fmt: skip
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "orthanc.json").write_text(json.dumps(config))
    password = "pacs-secret-from-file"
    (folder / "credentials.json").write_text(json.dumps({"RegisteredUsers": {"interop": password}}))
    token_file = tmp_path / "orthanc_callback_token"
    token_file.write_text("callback-token-from-file\n")
    Callbacks.received = []
    receiver = HTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROP_")}
    env["INTEROP_CALLBACK_URL"] = (
        f"http://127.0.0.1:{receiver.server_address[1]}/imaging/orthanc/deleted"
    )
    env["INTEROP_ORTHANC_CALLBACK_TOKEN_FILE"] = str(token_file)
    log = (tmp_path / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(folder)], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, auth=("interop", password), timeout=10) as http:
            while True:
                try:
                    if http.get("/system").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "orthanc.log").read_text()[-2000:])
                time.sleep(0.2)
            assert httpx.get(f"{url}/system", timeout=5).status_code == 401  # a password is needed
            check = ROOT / "deploy" / "orthanc" / "healthcheck.sh"  # compose's health check
            password_file = tmp_path / "orthanc_password"
            password_file.write_text(password)
            check_env = {"ORTHANC_PASSWORD_FILE": str(password_file), "PATH": os.environ["PATH"]}
            healthy = subprocess.run(["bash", str(check)], env=check_env | {
                "ORTHANC_HTTP_PORT": str(http_port)})  # fmt: skip
            assert healthy.returncode == 0
            password_file.write_text("wrong")
            assert subprocess.run(["bash", str(check)], env=check_env | {
                "ORTHANC_HTTP_PORT": str(http_port)}).returncode != 0  # fmt: skip
            stored = http.post(
                "/instances", content=Path(get_testdata_file("CT_small.dcm")).read_bytes()
            )
            assert stored.status_code == 200, stored.text
            study = stored.json()["ParentStudy"]
            found = http.get(f"{config['DicomWeb']['Root'].rstrip('/')}/studies")
            assert found.status_code == 200 and len(found.json()) == 1
            assert http.delete(f"/studies/{study}").status_code == 200
            deadline = time.monotonic() + 15
            while not any(body.get("ResourceType") == "Study" for _, _, body in Callbacks.received):
                assert time.monotonic() < deadline, (tmp_path / "orthanc.log").read_text()[-2000:]
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
        receiver.shutdown()
    path, authorization, body = next(
        c for c in Callbacks.received if c[2]["ResourceType"] == "Study"
    )
    assert path == "/imaging/orthanc/deleted" and body["ID"] == study
    assert authorization == "Bearer callback-token-from-file"  # the file's, newline dropped
