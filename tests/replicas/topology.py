"""Helpers of the deployment tests: real `interop serve` / `interop worker` processes on one
database, HL7 and REST senders that fail over to another replica, a rest-hook receiver.

Named apart from conftest.py: a test module importing "conftest" may get another folder's.
"""

from __future__ import annotations

import base64
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from hl7_listener.mllp import EB, frame

INTEROP = str(Path(sys.executable).parent / "interop")
CODE = "4548-4"  # every Observation of these tests is an HbA1c: the Subscription's criteria


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_key(folder: Path) -> Path:
    """The key file every replica shares (INTEROP_SECRET_KEY_FILE)."""
    path = folder / "secret.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode())
    path.chmod(0o600)
    return path


class Process:
    """One `interop` process in a session of its own (SIGKILL takes its children too)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [INTEROP, *args],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


class Replica(Process):
    def __init__(self, name: str, env: dict[str, str], folder: Path, *extra: str) -> None:
        self.http_port, self.mllp_port = free_port(), free_port()
        env = {**env, "INTEROP_PORT": str(self.http_port), "INTEROP_MLLP_PORT": str(self.mllp_port)}
        super().__init__(name, ["serve", *extra], env, folder)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=5).json()
        return found


def wait_ready(replicas: list[Replica], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for replica in replicas:
        while not replica.ready():
            if not replica.alive() or time.monotonic() > deadline:
                raise AssertionError(f"{replica.name} did not start:\n{replica.tail()}")
            time.sleep(0.3)


class Receiver:
    """A rest-hook endpoint on 127.0.0.1 recording each notification's resource and version."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, float]] = []  # (id, versionId, monotonic time)
        self.handshakes = 0
        received, lock = self.notes, threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    if self.headers.get("X-Subscription-Event") == "notification" and body:
                        resource = orjson.loads(body)
                        version = resource["meta"]["versionId"]
                        received.append((resource["id"], version, time.monotonic()))
                    else:
                        outer.handshakes += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def counts(self, before: float | None = None) -> Counter[tuple[str, str]]:
        return Counter((i, v) for i, v, t in list(self.notes) if before is None or t < before)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def oru(control_id: str, mrn: str, order: str, value: float) -> bytes:
    lines = [
        f"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane||19800102|F",
        f"ORC|RE|{order}|{order}",
        f"OBR|1|{order}|{order}^LAB|24323-8^Panel^LN|||20240101110000" + "|" * 18 + "F",
        f"OBX|1|NM|{CODE}^HbA1c^LN||{value}|%^^UCUM|4-6||||F",
    ]
    return "\r".join(lines).encode()


def send_hl7(replicas: Callable[[], list[Replica]], raw: bytes, start: int, log: list[str]) -> str:
    """Send one message, trying the replicas in turn from `start` until one acknowledges
    (a sender whose connection broke resends to another replica, as interface engines do);
    returns MSA-1."""
    deadline = time.monotonic() + 120
    attempt = start
    while time.monotonic() < deadline:
        live = replicas()
        replica = live[attempt % len(live)]
        attempt += 1
        try:
            with socket.create_connection(("127.0.0.1", replica.mllp_port), timeout=30) as sock:
                sock.sendall(frame(raw))
                buf = b""
                while EB not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before the ACK")
                    buf += chunk
        except OSError as exc:
            log.append(f"{replica.name}: {type(exc).__name__}")
            time.sleep(0.2)
            continue
        ack = buf.strip(b"\x0b\x1c\r").decode()
        msa = next(s for s in ack.split("\r") if s.startswith("MSA"))
        return msa.split("|")[1]
    raise AssertionError("no replica acknowledged the message")


def put(
    replicas: Callable[[], list[Replica]],
    path: str,
    body: dict[str, Any],
    start: int,
    log: list[str],
) -> int:
    """PUT (idempotent) to the replicas in turn from `start` until one answers."""
    deadline = time.monotonic() + 120
    attempt = start
    while time.monotonic() < deadline:
        live = replicas()
        replica = live[attempt % len(live)]
        attempt += 1
        try:
            response = httpx.put(f"{replica.url}/fhir/{path}", json=body, timeout=30)
        except httpx.HTTPError as exc:
            log.append(f"{replica.name}: {type(exc).__name__}")
            time.sleep(0.2)
            continue
        if response.status_code >= 500:
            log.append(f"{replica.name}: HTTP {response.status_code}")
            time.sleep(0.2)
            continue
        return response.status_code
    raise AssertionError(f"no replica took PUT {path}")


def observation(obs_id: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": CODE}]},
        "valueQuantity": {"value": value, "unit": "%"},
    }


def subscription(endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "id": "hba1c",
        "status": "requested",
        "reason": "every HbA1c",
        "criteria": f"Observation?code=http://loinc.org|{CODE}",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
    }


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def search_all(base: str, query: str) -> list[dict[str, Any]]:
    """Every match of a search, following `next` links."""
    found: list[dict[str, Any]] = []
    url: str | None = f"{base}/fhir/{query}"
    while url:
        page = httpx.get(url, timeout=30).json()
        found += [e["resource"] for e in page.get("entry", []) if "resource" in e]
        url = next(
            (link["url"] for link in page.get("link", []) if link["relation"] == "next"), None
        )
    return found
