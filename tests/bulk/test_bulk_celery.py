"""With Redis configured, $export runs on a real `interop worker` process (queue `bulk`), not
in the API process: the client sees the same kick-off, polling and files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bulk_helpers import ASYNC, ndjson, wait_for
from ci_support import IN_CI
from starlette.testclient import TestClient

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"
REDIS_URL = os.environ.get("INTEROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_db() -> str:
    """A Redis database per xdist process, apart from the AI tests' ones (12-15)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return REDIS_URL.rsplit("/", 1)[0] + f"/{8 + (int(worker) if worker.isdigit() else 0) % 4}"


def test_export_runs_on_the_celery_worker(database_url: str, tmp_path: Path) -> None:
    import redis

    redis_url = _redis_db()
    try:
        redis.Redis.from_url(redis_url).flushdb()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis not reachable: {exc}")
    settings = Settings(
        database_url=database_url, auth="off", base_url=BASE, redis_url=redis_url,
        bulk_dir=str(tmp_path / "bulk"), ai_worker_threads=0,
    )  # fmt: skip
    app = create_app(settings)
    env = {
        **os.environ,
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_BASE_URL": BASE,
        "INTEROP_REDIS_URL": redis_url,
        "INTEROP_BULK_DIR": str(tmp_path / "bulk"),
        "INTEROP_AUTH": "off",
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "interop.cli", "worker", "--queues", "bulk"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        with TestClient(app, base_url="http://testserver") as client:
            for _ in range(3):
                client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"})
            kick = client.get("/fhir/Patient/$export", headers=ASYNC)
            assert kick.status_code == 202, kick.text
            deadline = time.monotonic() + 60
            while b"ready." not in log.read_bytes():
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            done = wait_for(client, kick.headers["Content-Location"])
            assert done.status_code == 200, done.text
            (patients,) = [o for o in done.json()["output"] if o["type"] == "Patient"]
            assert patients["count"] == 3
            assert len(ndjson(client, patients["url"])) == 3
            assert b"bulk.run" in log.read_bytes()  # the worker ran it, not this process
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        app.state.store.engine.dispose()
