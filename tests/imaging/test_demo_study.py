"""`interop demo` with a PACS configured: one DICOM study goes through the server's real upload
endpoint into Orthanc and becomes an ImagingStudy of the demo patient; a second run finds it and
uploads nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from imaging_support import PASSWORD, USER, Orthanc

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_uploads_one_study_once(orthanc: Orthanc, tmp_path: Path) -> None:
    port, mllp = free_port(), free_port()
    env = {**os.environ, "INTEROP_DATABASE_URL": f"sqlite:///{tmp_path / 'interop.db'}",
           "INTEROP_PORT": str(port), "INTEROP_MLLP_PORT": str(mllp),
           "INTEROP_ORTHANC_URL": orthanc.url, "INTEROP_ORTHANC_USER": USER,
           "INTEROP_ORTHANC_PASSWORD": PASSWORD, "INTEROP_AI_WORKER_THREADS": "0",
           "INTEROP_LOG_FORMAT": "json"}  # fmt: skip
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen([str(BIN / "interop"), "serve"], env=env, cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        runs = []
        for _ in range(2):
            done = subprocess.run([str(BIN / "interop"), "demo", "--patients", "1", "--json"],
                                  env=env, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            assert done.returncode == 0, done.stderr
            runs.append(json.loads(done.stdout)["study"])
        assert runs[0].startswith("ImagingStudy/"), runs[0]
        assert runs[1] == runs[0] + " (already there)"
        studies = httpx.get(f"{orthanc.url}/studies", auth=(USER, PASSWORD)).json()
        assert len(studies) == 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
