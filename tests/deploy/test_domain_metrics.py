"""Each domain series moves when its thing happens, read from a real /metrics scrape (the
processes' counters and the gauges computed from the database at scrape time)."""

from __future__ import annotations

import time
from typing import Any

from metrics_support import value
from sqlalchemy import insert
from starlette.testclient import TestClient

from ai_worker.jobs import Jobs
from fhir_server import metrics
from fhir_server.bulk.models import bulk_jobs
from fhir_server.store.models import outbox
from fhir_server.store.outbox import Change, Outbox, outbox_consumers
from hl7_listener.inbox import Inbox
from hl7_listener.processor import Processor
from interop.app import create_app
from interop.metrics import DatabaseCollector
from interop.services import Loop
from interop.settings import Settings

ORU = "\r".join(
    [
        "MSH|^~\\&|GLUCO|WARD7|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1",
        "PID|1||777^^^HOSP&1.2.3&ISO^MR||Roe^Ann||19700101|F",
        "OBR|1|PL{ctrl}|FI{ctrl}|2345-7^Glucose^LN|||20240101110000||||||||||||||||||F",
        "OBX|1|NM|2345-7^Glucose^LN||99|mg/dL^^UCUM|70-99|N|||F",
    ]
)


def scrape(app: Any) -> str:
    """What /metrics answers: this process's counters plus the database's gauges."""
    body, _ = metrics.render([DatabaseCollector(app.state.store.engine)])
    return body.decode()


def test_metrics_endpoint_serves_the_database_gauges(app: Any) -> None:
    opened = create_app(
        Settings(
            database_url=str(app.state.store.engine.url.render_as_string(hide_password=False)),
            auth="off", base_url="http://testserver/fhir", metrics="on",
        ),
        migrate=False,
    )  # fmt: skip
    with TestClient(opened) as scraper:
        text = scraper.get("/metrics").text
    opened.state.store.engine.dispose()
    assert value(text, "interop_database_up") == 1
    assert "interop_hl7_inbox_backlog" in text and "interop_ai_jobs" in text


def test_hl7_backlog_and_messages_by_sender(app: Any) -> None:
    processor = Processor(Inbox(app.state.store.engine), app.state.store, ack_mode="store")
    sender = {"sender": "GLUCO^WARD7"}
    before = value(scrape(app), "interop_hl7_messages_total", **sender, status="processed")
    processor.handle(ORU.format(ctrl="B1").encode())
    processor.handle(ORU.format(ctrl="B2").encode())
    time.sleep(0.01)
    text = scrape(app)
    assert value(text, "interop_hl7_inbox_backlog") == 2  # stored and acknowledged, not mapped
    assert value(text, "interop_hl7_inbox_oldest_seconds") > 0
    processor.process_pending()
    text = scrape(app)
    assert value(text, "interop_hl7_inbox_backlog") == 0
    assert value(text, "interop_hl7_inbox_oldest_seconds") == 0
    assert value(text, "interop_hl7_messages_total", **sender, status="processed") == before + 2
    processor.close()


def test_outbox_lag_per_consumer_counts_only_what_it_handles(app: Any) -> None:
    engine = app.state.store.engine
    old = int((time.time() - 120) * 1_000_000)
    with engine.begin() as conn:
        conn.execute(insert(outbox_consumers).values(name="lab-push", floor=0))
        for pk, res_type in ((1, "Observation"), (2, "Patient")):
            conn.execute(
                insert(outbox).values(
                    pk=pk,
                    res_type=res_type,
                    res_id=f"x{pk}",
                    version_id=1,
                    interaction="create",
                    created=old + pk,
                )  # fmt: skip
            )
    body, _ = metrics.render([DatabaseCollector(engine)])
    text = body.decode()
    assert value(text, "interop_outbox_pending", consumer="lab-push") == 2
    assert 110 < value(text, "interop_outbox_lag_seconds", consumer="lab-push") < 600
    only_observations = DatabaseCollector(engine, lambda name: {"Observation"})
    Outbox(engine).done("lab-push", [_change(1, "Observation")])
    text = metrics.render([only_observations])[0].decode()
    assert value(text, "interop_outbox_pending", consumer="lab-push") == 0  # Patient: not its
    assert value(text, "interop_outbox_lag_seconds", consumer="lab-push") == 0


def _change(pk: int, res_type: str) -> Change:
    return Change(pk, res_type, f"x{pk}", 1, "create", 0)


def test_ai_jobs_queued_running_failed_and_duration_per_model(app: Any) -> None:
    jobs = Jobs(app.state.store.engine)
    model = {"model": "lung-ct"}
    text = scrape(app)
    failed_before = value(text, "interop_ai_jobs_finished_total", **model, status="failed")
    timed_before = value(text, "interop_ai_job_duration_seconds_count", **model)
    jobs.open("t1", "study1", "lung-ct", "1")
    jobs.open("t2", "study2", "lung-ct", "1")
    assert jobs.claim("t2", "decode", "w1", 60)
    text = scrape(app)
    assert value(text, "interop_ai_jobs", **model, status="queued") == 1
    assert value(text, "interop_ai_jobs", **model, status="running") == 1
    jobs.finish("t2", "failed", "model crashed")
    jobs.finish("t2", "failed", "again")  # an ended job is not counted twice
    text = scrape(app)
    assert value(text, "interop_ai_jobs", **model, status="running") == 0
    assert value(text, "interop_ai_jobs_finished_total", **model, status="failed") == (
        failed_before + 1
    )
    assert value(text, "interop_ai_job_duration_seconds_count", **model) == timed_before + 1


def test_bulk_jobs_by_kind_and_status(app: Any) -> None:
    with app.state.store.engine.begin() as conn:
        for job_id, status in (("j1", "running"), ("j2", "failed"), ("j3", "failed")):
            conn.execute(
                insert(bulk_jobs).values(
                    job_id=job_id,
                    kind="export",
                    owner="",
                    status=status,
                    request="/fhir/$export",
                    params="{}",
                    created=0,
                    transaction_time=0,
                    progress="",
                    heartbeat=0,
                    cancel=False,
                )  # fmt: skip
            )
    text = scrape(app)
    assert value(text, "interop_bulk_jobs", kind="export", status="failed") == 2
    assert value(text, "interop_bulk_jobs", kind="export", status="running") == 1


def test_sync_services_report_last_success_and_failures() -> None:
    outcomes = iter([None, RuntimeError("PACS down"), RuntimeError("PACS down")])

    def step() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    loop = Loop("imaging-sync-test", step, interval=1.0)
    started = time.time()
    assert loop.run_once()
    text = metrics.render()[0].decode()
    service = {"service": "imaging-sync-test"}
    assert value(text, "interop_service_last_success_timestamp_seconds", **service) >= started
    assert value(text, "interop_service_failures", **service) == 0
    assert not loop.run_once() and not loop.run_once()
    text = metrics.render()[0].decode()
    assert value(text, "interop_service_failures", **service) == 2
