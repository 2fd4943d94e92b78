"""The same flow on Celery and Redis, with real `interop worker` processes: queues apart, and a
worker killed mid-task whose job is picked up again, neither lost nor doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ai_support import BASE, Orthanc, ai_settings, clear_tables, upload_study

from ai_worker.phantom import FAT, make_phantom, write_series

TESTS = Path(__file__).parent


class Worker:
    """One `interop worker` process (its own session, so the pool child dies with it)."""

    def __init__(self, env: dict[str, str], log: Path, queues: str = "ai.decode,ai.infer"):
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "interop.cli", "worker", "--queues", queues],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def celery_redis(redis_url: str) -> str:
    """A Redis database of its own per xdist process: the queue names are fixed, and a worker
    of a parallel test session must not take this session's messages."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = 12 + (int(worker) if worker.isdigit() else 0) % 4
    return redis_url.rsplit("/", 1)[0] + f"/{index}"


@pytest.fixture(scope="session")
def celery_app(database_url: str, orthanc: Orthanc, celery_redis: str, tmp_path_factory):  # type: ignore[no-untyped-def]
    from interop.app import create_app

    settings = ai_settings(
        database_url, orthanc, redis_url=celery_redis, ai_extra_plugins=["slow_plugin:provide"],
        ai_worker_threads=0, ai_rules=[],
    )  # fmt: skip
    app = create_app(settings)
    app.state.worker_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_BASE_URL": BASE,
        "INTEROP_REDIS_URL": celery_redis,
        "INTEROP_DICOMWEB_URL": orthanc.dicomweb,
        "INTEROP_ORTHANC_USER": orthanc.user,
        "INTEROP_ORTHANC_PASSWORD": orthanc.password,
        "INTEROP_AI_EXTRA_PLUGINS": '["slow_plugin:provide"]',
        "INTEROP_AI_LEASE_SECONDS": "2",
        "INTEROP_AI_VISIBILITY_TIMEOUT": "4",
        "INTEROP_AI_RETRY_BACKOFF": "0.2",
        "INTEROP_AI_CACHE_DIR": str(tmp_path_factory.mktemp("ai-cache")),
        "INTEROP_LOG_FORMAT": "text",
        "INTEROP_MLLP_PORT": "0",
    }
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def env(celery_app, celery_redis: str, tmp_path: Path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    import redis

    redis.Redis.from_url(celery_redis).flushdb()
    clear_tables(celery_app)
    yield {**celery_app.state.worker_env, "INTEROP_TEST_SLOW_MARKER": str(tmp_path / "runs")}


@pytest.fixture
def client(celery_app):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    with TestClient(celery_app, base_url="http://testserver") as test_client:
        yield test_client


def analyze(client, study_id: str, model: str) -> str:  # type: ignore[no-untyped-def]
    body = {"resourceType": "Parameters", "parameter": [{"name": "model", "valueString": model}]}
    response = client.post(f"/fhir/ImagingStudy/{study_id}/$analyze", json=body)
    assert response.status_code == 200, response.text
    ref: str = response.json()["parameter"][0]["valueReference"]["reference"]
    return ref


def wait_task(client, ref: str, until, timeout: float = 90) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        task: dict = client.get(f"/fhir/{ref}").json()
        if until(task):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"Task never got there: {task}")
        time.sleep(0.2)


def test_celery_worker_runs_the_job(client, env, orthanc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    phantom = make_phantom(slices=4, size=32)
    patient, study = upload_study(client, orthanc, write_series(phantom, "rle"))
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        ref = analyze(client, study["id"], "ct-classical")
        task = wait_task(client, ref, lambda t: t["status"] in ("completed", "failed"))
    finally:
        worker.stop()
    assert task["status"] == "completed", task.get("statusReason")
    report = client.get(f"/fhir/{task['output'][0]['valueReference']['reference']}").json()
    assert report["subject"] == {"reference": f"Patient/{patient['id']}"}
    values = {
        o["code"]["coding"][0]["code"]: o.get("valueQuantity", {}).get("value")
        for o in (client.get(f"/fhir/{r['reference']}").json() for r in report["result"])
    }
    assert values["fat-volume"] == pytest.approx(phantom.ml(FAT), abs=1e-3)


def test_decode_and_inference_queues_are_separate(client, env, orthanc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, study = upload_study(client, orthanc, write_series(make_phantom(slices=3, size=24)))
    decoder = Worker(env, tmp_path / "decode.log", queues="ai.decode")
    try:
        decoder.wait_ready()
        ref = analyze(client, study["id"], "ct-classical")
        service = client.app.state.ai.service
        task_id = ref.split("/")[1]
        deadline = time.monotonic() + 60
        while (job := service.jobs.get(task_id)).stage != "infer" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        job = service.jobs.get(task_id)
        assert (job.stage, job.status) == ("infer", "queued")  # decoded, waiting for a GPU host
        assert client.get(f"/fhir/{ref}").json()["businessStatus"]["text"] == "decoding"
    finally:
        decoder.stop()
    inferrer = Worker(env, tmp_path / "infer.log", queues="ai.infer")
    try:
        inferrer.wait_ready()
        task = wait_task(client, ref, lambda t: t["status"] in ("completed", "failed"))
    finally:
        inferrer.stop()
    assert task["status"] == "completed", task.get("statusReason")


def test_worker_killed_mid_task_is_picked_up_not_doubled(client, env, orthanc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = Path(env["INTEROP_TEST_SLOW_MARKER"])
    env = {**env, "INTEROP_TEST_SLOW_SECONDS": "3"}
    _, study = upload_study(client, orthanc, write_series(make_phantom(slices=3, size=24)))
    first = Worker(env, tmp_path / "first.log")
    first.wait_ready()
    ref = analyze(client, study["id"], "slow-ct")
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)
    first.kill()  # SIGKILL, parent and pool child, in the middle of the model's run
    task = client.get(f"/fhir/{ref}").json()
    assert task["status"] == "in-progress" and task["businessStatus"]["text"] == "inferring"

    second = Worker(env, tmp_path / "second.log")
    try:
        second.wait_ready()
        task = wait_task(client, ref, lambda t: t["status"] in ("completed", "failed"))
    finally:
        second.stop()
    assert task["status"] == "completed", task.get("statusReason")
    runs = marker.read_text().split()
    assert len(runs) == 2 and runs[0] != runs[1]  # run again, by another process
    reports = client.get("/fhir/DiagnosticReport", params={"study": f"ImagingStudy/{study['id']}"})
    assert reports.json()["total"] == 1
    report = reports.json()["entry"][0]["resource"]
    assert report["meta"]["versionId"] == "1"  # written once
    provenance = client.get(
        "/fhir/Provenance", params={"target": f"DiagnosticReport/{report['id']}"}
    ).json()
    assert provenance["total"] == 1
    job = client.app.state.ai.service.jobs.get(ref.split("/")[1])
    assert job.status == "done" and job.attempts == 3  # decode once, infer twice
