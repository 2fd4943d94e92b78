"""The README's first command on a fresh clone: `./scripts/serve` makes its own virtualenv with
the runtime only (no test tools, no AI stack, no browser, no npm module), the server answers
`/fhir/metadata`, and `interop demo` works on that lean install. Prints the time from
`git clone` to the demo's first result. Slow (a real install, helped by pip's cache)."""

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
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = {
    "pytest",
    "pytest-xdist",
    "mypy",
    "ruff",
    "hypothesis",
    "import-linter",
    "onnx",
    "hl7",
    "fhir.resources",
    "fhirpy",
    "kubernetes-validate",
    "openapi-spec-validator",
}  # fmt: skip (uv is the installer: it stays)
OPTIONAL = {"onnxruntime", "numpy", "celery", "pymysql", "dicomweb-client", "pylibjpeg"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_on_a_fresh_clone_installs_the_runtime_only(tmp_path: Path) -> None:
    started = time.monotonic()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    port, mllp = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INTEROP_", "VIRTUAL_ENV", "PYTHONPATH"))}  # fmt: skip
    env |= {"INTEROP_PORT": str(port), "INTEROP_MLLP_PORT": str(mllp),
            "INTEROP_LOG_FORMAT": "json",
            "PATH": os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                    if not p.startswith(sys.prefix))}  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["./scripts/serve"], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no answer from /fhir/metadata"
            time.sleep(1)
        serving = time.monotonic() - started
        assert answer.json()["resourceType"] == "CapabilityStatement"

        venv_python = clone / ".venv" / "bin" / "python"
        listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--format=json"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        installed = {p["name"].lower() for p in json.loads(listed.stdout)}
        assert "interop-server" in installed and "fastapi" in installed
        assert not installed & TEST_ONLY, installed & TEST_ONLY
        assert not installed & OPTIONAL, installed & OPTIONAL
        assert not list(clone.rglob("node_modules")), "an npm module was installed"
        printed = log.read_text()
        for tool in ("chromium", "npm", "Orthanc", "apt-get"):
            assert tool.lower() not in printed.lower(), f"serve mentions {tool}"

        demo = subprocess.run([str(clone / ".venv" / "bin" / "interop"), "demo", "--json",
                               "--patients", "2"], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        assert json.loads(demo.stdout)["messages"] == {"AA": 6}
        print(
            f"\ngit clone -> /fhir/metadata answers: {serving:.0f} s; "
            f"-> first demo result: {time.monotonic() - started:.0f} s"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
