"""First start and `interop demo` against a real `interop serve` process, on a fresh SQLite file
and a fresh PostgreSQL database: the admin user and the next steps on the console, the demo's
HL7 messages in the inbox and as Observations, and a second run that changes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from store_support import own_database

from hl7_listener.inbox import hl7_messages
from interop import demo
from smart_auth.registry import Registry

BIN = Path(sys.executable).parent


def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database (the first start needs one), dropped afterwards.
    Like tests/conftest.py: skipped locally without PostgreSQL, a failure in CI."""
    with own_database("postgresql", prefix="interop_demo") as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    env: dict[str, str]
    base: str
    stdout: Path
    stderr: Path
    database_url: str

    def interop(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "interop"), *argv], capture_output=True, text=True,
                              env=self.env, timeout=300, cwd=self.stdout.parent)  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    databases = fresh_postgres() if request.param == "postgresql" else None
    url = next(databases) if databases else f"sqlite:///{folder / 'interop.db'}"
    port, mllp = free_port(), free_port()
    env = {**os.environ, "INTEROP_DATABASE_URL": url, "INTEROP_PORT": str(port),
           "INTEROP_MLLP_PORT": str(mllp), "INTEROP_LOG_FORMAT": "json",
           "INTEROP_SECRET_KEY_FILE": str(folder / "secret.key")}  # fmt: skip
    env.pop("INTEROP_ADMIN_PASSWORD_FILE", None)
    out, err = folder / "stdout", folder / "stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([str(BIN / "interop"), "serve"], stdout=o, stderr=e, env=env,
                                cwd=folder)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, err.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        yield Server(env, base, out, err, url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if databases:
            for _ in databases:  # drops the database
                pass


def test_first_start_creates_an_admin_and_prints_the_next_steps(server: Server) -> None:
    printed = server.stdout.read_text()
    found = re.search(r"created the user 'admin' with password (\S+)", printed)
    assert found, printed
    password = found.group(1)
    for step in ("/console", "interop token", "interop hl7 send examples/hl7/oru-r01.hl7"):
        assert step in printed
    assert password not in server.stderr.read_text()  # printed once, never logged
    engine = create_engine(server.database_url)
    try:
        user = Registry(engine).login("admin", password)
        assert user is not None and user.role == "admin"
    finally:
        engine.dispose()


def _snapshot(url: str) -> dict[str, Any]:
    """Every stored version of every resource, and every inbox row."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(
                # AuditEvents record this test's own reads (written in the background)
                text(
                    "SELECT res_type, count(*) FROM resource_versions "
                    "WHERE res_type <> 'AuditEvent' GROUP BY res_type"
                )
            ).all()
            inbox = conn.execute(select(func.count()).select_from(hl7_messages)).scalar()
    finally:
        engine.dispose()
    return {"versions": dict(versions), "inbox": inbox}


def _fhir(server: Server, token: str, query: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.base}/fhir/{query}", timeout=30,
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_demo_loads_through_the_real_paths_and_twice_changes_nothing(server: Server) -> None:
    first = server.interop("demo", "--json")
    assert first.returncode == 0, first.stderr
    loaded = json.loads(first.stdout)
    patients = demo.people()
    sent = len(patients) * 3
    assert loaded["messages"] == {"AA": sent}
    assert loaded["resources"]["created"] > len(patients) * 10

    listed = json.loads(server.interop("hl7", "list", "--json", "--limit", "100").stdout)
    demo_rows = [m for m in listed["messages"] if m["controlId"].startswith("DEMO-")]
    assert len(demo_rows) == sent and {m["status"] for m in demo_rows} == {"processed"}
    assert {m["type"] for m in demo_rows} == {"ORU^R01", "ADT^A01", "ADT^A08"}

    # the ORU's results are Observations of the same patients the store path created
    client = loaded["client_id"]
    minted = server.interop("token", "--client", client, "--scope", "system/*.rs")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    for p in patients:
        found = _fhir(server, token, "Patient?identifier=" + f"{demo.MRN_SYSTEM}|{p.mrn}")
        assert len(found["entry"]) == 1
        pid = found["entry"][0]["resource"]["id"]
        glucose = _fhir(
            server, token, f"Observation?subject=Patient/{pid}&code=http://loinc.org|2345-7"
        )
        values = sorted(e["resource"]["valueQuantity"]["value"] for e in glucose["entry"])
        oru = next(m for s, c, m in demo.hl7_messages(p) if c.endswith("ORU-BMP"))
        sent_value = float(oru.split(b"2345-7^")[1].split(b"|")[2].decode())
        assert len(values) == 3 and sent_value in values  # two visits + the ORU's result

    before = _snapshot(server.database_url)
    again = server.interop("demo", "--json")
    assert again.returncode == 0, again.stderr
    repeated = json.loads(again.stdout)
    assert repeated["messages"] == {"already in the inbox": sent}
    assert set(repeated["resources"]) == {"matched"}
    assert repeated["client_id"] == client
    assert _snapshot(server.database_url) == before


def test_demo_without_a_server_says_to_start_one(tmp_path: Path) -> None:
    env = {**os.environ, "INTEROP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "INTEROP_MLLP_PORT": str(free_port())}  # fmt: skip
    done = subprocess.run([str(BIN / "interop"), "demo"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "start it first (./scripts/serve" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing was written before the check
