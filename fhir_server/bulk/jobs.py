"""Bulk jobs: the job table's small repository and the runner that executes jobs.

A job is a plain function of its id (`run_job`), so the same call runs in the in-process
thread pool here or in a Celery task. A job reports `progress` (which also beats its
heartbeat, so a job orphaned by a crash is noticed) and learns there whether it was cancelled
between chunks of work; the API only ever flips `cancel` and reads the row.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update

from fhir_server.bulk.config import BulkConfig
from fhir_server.bulk.models import bulk_jobs
from fhir_server.clock import now_us
from fhir_server.store.repository import Store
from fhir_server.store.work import WorkQueue, process_id

log = logging.getLogger("interop.bulk")
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0  # no heartbeat for this long: the job's process is gone
J = bulk_jobs.c
# a running job is claimed under a lease its heartbeat renews (fhir_server.store.work)
QUEUE = WorkQueue(bulk_jobs, "job_id", "lease_owner", "lease_until")


@dataclass(slots=True)
class Job:
    job_id: str
    kind: str
    owner: str
    status: str
    request: str
    params: dict[str, Any]
    created: int
    transaction_time: int
    progress: str
    cancel: bool
    result: str | None
    expires: int | None


def _job(row: Any) -> Job:
    return Job(
        row.job_id,
        row.kind,
        row.owner,
        row.status,
        row.request,
        orjson.loads(row.params),
        row.created,
        row.transaction_time,
        row.progress,
        bool(row.cancel),
        row.result,
        row.expires,
    )


class JobStore:
    """Each call is its own short transaction: jobs and the API never hold locks for long."""

    def __init__(self, store: Store, config: BulkConfig) -> None:
        self.store = store
        self.config = config
        self.owner = process_id()  # this process, as the holder of the jobs it runs

    def create(self, kind: str, owner: str, request: str, params: dict[str, Any]) -> Job:
        stamp = now_us()
        job_id = secrets.token_urlsafe(18)
        values = {
            "job_id": job_id,
            "kind": kind,
            "owner": owner,
            "status": "accepted",
            "request": request,
            "params": orjson.dumps(params).decode(),
            "created": stamp,
            "transaction_time": stamp,
            "progress": "accepted",
            "cancel": False,
            "heartbeat": stamp,
        }
        with self.store.write_connection() as conn:
            conn.execute(insert(bulk_jobs).values(**values))
        found = self.get(job_id)
        assert found is not None
        return found

    def get(self, job_id: str) -> Job | None:
        with self.store.connection() as conn:
            row = conn.execute(select(bulk_jobs).where(J.job_id == job_id)).first()
        return _job(row) if row is not None else None

    def waiting(self, before: int | None = None) -> list[str]:
        """Jobs accepted and not yet started (created before `before`), oldest first."""
        query = select(J.job_id).where(
            J.status == "accepted", J.kind != "upload", J.cancel.is_(False)
        )
        if before is not None:
            query = query.where(J.created < before)
        with self.store.connection() as conn:
            rows = conn.execute(query.order_by(J.pk))
            return [r[0] for r in rows]

    def beat(self, job_id: str) -> None:
        QUEUE.renew(self.store.engine, [job_id], self.owner, STALE_SECONDS, heartbeat=now_us())

    def recover(self, stale_seconds: float = STALE_SECONDS) -> list[str]:
        """Jobs left `running` by a process that died (its lease ran out, or no heartbeat
        for `stale_seconds`):
        exports start again from scratch; imports fail with a note (their lines may be half
        applied; re-running one is safe for lines with ids, which are PUTs)."""
        cutoff = now_us() - int(stale_seconds * 1_000_000)
        with self.store.write_connection() as conn:
            rows = conn.execute(
                select(J.job_id, J.kind).where(
                    J.status == "running", QUEUE.free(now_us()) | (J.heartbeat < cutoff)
                )
            ).all()
            exports = [job_id for job_id, kind in rows if kind == "export"]
            imports = [job_id for job_id, kind in rows if kind != "export"]
            if exports:
                conn.execute(
                    update(bulk_jobs)
                    .where(J.job_id.in_(exports), J.status == "running")
                    .values(
                        status="accepted",
                        progress="restarted after an interruption",
                        lease_owner=None,
                        lease_until=None,
                    )
                )
            if imports:
                note = "interrupted by a server restart; run the import again"
                expires = now_us() + self.config.retention_seconds * 1_000_000
                conn.execute(
                    update(bulk_jobs)
                    .where(J.job_id.in_(imports), J.status == "running")
                    .values(status="failed", result=note, progress="failed", expires=expires)
                )
        for job_id in exports:
            shutil.rmtree(self.directory(job_id), ignore_errors=True)
        return exports

    def claim(self, job_id: str) -> bool:
        """accepted -> running, for exactly one runner."""
        return bool(
            QUEUE.claim(
                self.store.engine,
                self.owner,
                STALE_SECONDS,
                [J.job_id == job_id, J.status == "accepted", J.cancel.is_(False)],
                values={"status": "running", "progress": "started", "heartbeat": now_us()},
            )  # fmt: skip
        )

    def progress(self, job_id: str, text: str) -> bool:
        """Record progress; False when the job was cancelled meanwhile (the job then stops)."""
        with self.store.write_connection() as conn:
            conn.execute(
                update(bulk_jobs)
                .where(J.job_id == job_id)
                .values(progress=text[:255], heartbeat=now_us())
            )
            cancel = conn.execute(select(J.cancel).where(J.job_id == job_id)).scalar()
        return cancel is not None and not cancel

    def finish(self, job_id: str, status: str, result: dict[str, Any] | str) -> None:
        text = result if isinstance(result, str) else orjson.dumps(result).decode()
        expires = now_us() + self.config.retention_seconds * 1_000_000
        with self.store.write_connection() as conn:
            conn.execute(
                update(bulk_jobs)
                .where(J.job_id == job_id, J.cancel.is_(False))
                .values(status=status, result=text, expires=expires, progress=status)
            )

    def cancel(self, job_id: str) -> None:
        """Flag the job; a running job notices at its next chunk. Cleaned up right away."""
        with self.store.write_connection() as conn:
            conn.execute(
                update(bulk_jobs)
                .where(J.job_id == job_id)
                .values(cancel=True, status="cancelled", expires=now_us())
            )

    def directory(self, job_id: str) -> Path:
        return self.config.directory / job_id

    def cleanup(self, now: int | None = None) -> int:
        """Remove the files and rows of jobs past their expiry; returns how many."""
        now = now_us() if now is None else now
        with self.store.connection() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(J.job_id, J.status).where(J.expires.is_not(None), J.expires <= now)
                )
            ]
        for job_id in ids:
            shutil.rmtree(self.directory(job_id), ignore_errors=True)
        if ids:
            with self.store.write_connection() as conn:
                conn.execute(delete(bulk_jobs).where(J.job_id.in_(ids)))
        return len(ids)


JobFunction = Callable[[JobStore, Job, Any], None]


def run_job(jobs: JobStore, job_id: str, env: Any) -> None:
    """Run one job to its end: the single entry point for a thread or a Celery task.

    `env` is what the job function needs besides the table (the Store and base URL).
    """
    from fhir_server.bulk.export import run_export
    from fhir_server.bulk.importer import run_import

    functions: dict[str, JobFunction] = {"export": run_export, "import": run_import}
    if not jobs.claim(job_id):
        return  # cancelled before it started, or another runner has it
    job = jobs.get(job_id)
    if job is None:
        return
    stop = threading.Event()

    def heartbeat() -> None:  # also while one long query runs
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                jobs.beat(job_id)
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.warning("bulk job heartbeat failed", exc_info=True)

    threading.Thread(target=heartbeat, daemon=True, name=f"bulk-beat-{job_id[:8]}").start()
    try:
        functions[job.kind](jobs, job, env)
    except Cancelled:
        shutil.rmtree(jobs.directory(job_id), ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - a job's failure is reported on its status URL
        log.exception("bulk job failed", extra={"job": job_id, "kind": job.kind})
        jobs.finish(job_id, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        stop.set()


class Cancelled(Exception):
    """Raised inside a job when its `cancel` flag is seen."""


class JobRunner:
    """The embedded default: a small thread pool running jobs in this process.

    Started with the app (and again on demand: an app may be started more than once, as
    test clients do), stopped with it; unfinished jobs stay in the table. The sweep (expiry,
    orphans, jobs never started) is `BulkService.sweep`, run by one process of the
    deployment (a singleton service of the app).
    """

    def __init__(self, jobs: JobStore, env: Any) -> None:
        self.jobs = jobs
        self.env = env
        self.pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(
                    self.jobs.config.workers, thread_name_prefix="bulk-job"
                )
            return self.pool

    def submit(self, job_id: str) -> None:
        self.start().submit(run_job, self.jobs, job_id, self.env)

    def close(self) -> None:
        with self._lock:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
