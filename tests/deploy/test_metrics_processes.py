"""/metrics of a real `interop serve` with two API worker processes (SQLite, PostgreSQL).

A hand-written per-process registry answered a scrape with the counts of whichever worker
took it; with `prometheus_client` in multiprocess mode every process's counts are summed: the
two uvicorn workers' HTTP requests and the parent process's MLLP messages alike.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from metrics_support import value
from prometheus_client.mmap_dict import MmapedDict
from store_support import own_database

from hl7_listener.mllp import EB, frame

ORU = "\r".join(
    [
        "MSH|^~\\&|LABX|NORTH|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1",
        "PID|1||{mrn}^^^HOSP&1.2.3&ISO^MR||Doe^Jane||19800102|F",
        "OBR|1|PL{ctrl}|FI{ctrl}|2345-7^Glucose^LN|||20240101110000||||||||||||||||||F",
        "OBX|1|NM|2345-7^Glucose^LN||101|mg/dL^^UCUM|70-99|H|||F",
    ]
)
NO_PATIENT = "MSH|^~\\&|LABX|NORTH|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_database(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this module's own, of the session's kind: the server below makes its
    signing keys with a secret key file of its own, which the session's apps could not read."""
    with own_database(database_url, tmp_path_factory.mktemp("serve-db"), "interop_serve") as url:
        yield url


@pytest.fixture(scope="module")
def server(serve_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("serve")
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale from a previous run")
    http_port, mllp_port = free_port(), free_port()
    env = {
        **os.environ,
        "INTEROP_DATABASE_URL": serve_database,
        "INTEROP_AUTH": "off",
        "INTEROP_METRICS": "on",
        "INTEROP_WORKERS": "2",
        "INTEROP_PORT": str(http_port),
        "INTEROP_MLLP_PORT": str(mllp_port),
        "INTEROP_SECRET_KEY_FILE": str(folder / "secret.key"),
        "INTEROP_BULK_DIR": str(folder / "bulk"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "interop"), "serve"],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 240  # migrations and two workers on a busy machine
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail((folder / "serve.log").read_text()[-3000:])
        time.sleep(0.3)
    try:
        yield {"base": base, "mllp": mllp_port, "metrics_dir": metrics_dir}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def scrape(base: str) -> str:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def send(port: int, *messages: str) -> list[str]:
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for message in messages:
            sock.sendall(frame(message.encode()))
            data = b""
            while not data.endswith(EB + b"\r"):
                chunk = sock.recv(65536)
                assert chunk, "connection closed before the ACK"
                data += chunk
            acks.append(data.decode())
    return acks


def answering_pids(metrics_dir: Path) -> set[str]:
    """Processes that counted FHIR requests, from the files they wrote."""
    return {
        path.stem.split("_")[1]
        for path in metrics_dir.glob("counter_*.db")
        if any(
            '"fhir_requests"' in key and count > 0
            for key, count, *_ in MmapedDict.read_all_values_from_file(str(path))
        )
    }


def metadata(base: str) -> None:
    with httpx.Client() as http:  # a new connection each: any worker may accept it
        assert http.get(f"{base}/fhir/metadata").status_code == 200


def test_counts_of_every_process_are_summed(server: dict) -> None:
    base = server["base"]
    before = value(scrape(base), "fhir_requests_total", interaction="capabilities")
    sent = 0
    deadline = time.monotonic() + 60
    # the kernel chooses which worker accepts: send in parallel until both have answered
    with ThreadPoolExecutor(8) as pool:
        while len(answering_pids(server["metrics_dir"])) < 2 and time.monotonic() < deadline:
            list(pool.map(metadata, [base] * 40))
            sent += 40
    pids = answering_pids(server["metrics_dir"])
    text = scrape(base)
    assert len(pids) == 2, pids  # both workers counted ...
    # ... and one scrape, answered by one of them, holds every request exactly once
    assert value(text, "fhir_requests_total", interaction="capabilities") - before == sent
    assert value(text, "fhir_request_duration_seconds_count", interaction="capabilities") >= sent
    assert not (server["metrics_dir"] / "counter_1.db").exists()  # a previous run's: cleaned


def test_mllp_messages_count_by_sender_and_status_across_processes(server: dict) -> None:
    base = server["base"]
    text = scrape(base)
    processed = value(text, "interop_hl7_messages_total", sender="LABX^NORTH", status="processed")
    failed = value(text, "interop_hl7_messages_total", sender="LABX^NORTH", status="failed")
    duplicate = value(text, "interop_hl7_messages_total", sender="LABX^NORTH", status="duplicate")
    ok = ORU.format(ctrl="M1", mrn="555")
    acks = send(server["mllp"], ok, ok, NO_PATIENT.format(ctrl="M2"))
    assert "MSA|AA" in acks[0] and "MSA|AA" in acks[1] and "MSA|AE" in acks[2], acks
    text = scrape(base)  # answered by an API worker; the MLLP listener runs in the parent
    sender = {"sender": "LABX^NORTH"}
    assert value(text, "interop_hl7_messages_total", **sender, status="processed") == processed + 1
    assert value(text, "interop_hl7_messages_total", **sender, status="duplicate") == duplicate + 1
    assert value(text, "interop_hl7_messages_total", **sender, status="failed") == failed + 1
    assert value(text, "interop_hl7_mapping_seconds_count", message_type="ORU^R01") >= 1
    assert value(text, "interop_hl7_last_message_timestamp_seconds", **sender) > time.time() - 60
    assert value(text, "interop_database_up") == 1
    assert value(text, "interop_hl7_inbox_backlog") == 0
