"""The job table: the lock, lease and progress of each analysis, beside its FHIR Task.

The Task is what clinicians and clients see; this row is what workers coordinate on, with
plain SQL that is atomic on SQLite and PostgreSQL alike:
- `active_key` (study|model|version) is unique while a job is queued or running and NULL
  after, so the same study and model version never runs twice at once;
- a worker claims a stage under a lease it keeps renewing (`fhir_server.store.work`, the
  machinery of every durable queue); a worker killed mid-task stops renewing, and once the
  lease has expired a redelivered (or swept) message claims the job again: picked up again,
  never run twice at the same time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    exc,
    insert,
    or_,
    select,
    update,
)

from fhir_server import metrics
from fhir_server.store.db import write_transaction
from fhir_server.store.models import PrimaryKey, metadata
from fhir_server.store.work import WorkQueue

ai_jobs = Table(
    "ai_jobs",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=False, unique=True, doc="the FHIR Task's id"),
    Column("study_id", String(64), nullable=False, doc="the ImagingStudy's id"),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("active_key", String(300), nullable=True, unique=True, doc="set while not finished"),
    Column("status", String(16), nullable=False, doc="queued|running|done|failed"),
    Column("stage", String(8), nullable=False, doc="decode|infer: the next stage to run"),
    Column("step", String(16), nullable=False, doc="the Task's businessStatus"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", BigInteger, nullable=True, doc="UTC epoch microseconds"),
    Column("worker", String(128), nullable=True),
    Column("error", Text, nullable=True),
    Column("report_id", String(64), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Index("ix_ai_jobs_status_updated", "status", "updated"),
)
J = ai_jobs.c
ACTIVE = ("queued", "running")
# a stage is claimed under a lease held by `worker` (fhir_server.store.work)
QUEUE = WorkQueue(ai_jobs, "task_id", "worker", "lease_until")


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass(frozen=True)
class Job:
    task_id: str
    study_id: str
    model: str
    model_version: str
    status: str
    stage: str
    step: str
    attempts: int
    lease_until: int | None
    worker: str | None
    error: str | None
    report_id: str | None
    created: int
    updated: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": f"Task/{self.task_id}",
            "study": f"ImagingStudy/{self.study_id}",
            "model": self.model,
            "version": self.model_version,
            "status": self.status,
            "step": self.step,
            "attempts": self.attempts,
            "worker": self.worker,
            "error": self.error,
            "report": f"DiagnosticReport/{self.report_id}" if self.report_id else None,
            "created": self.created // 1_000_000,
            "updated": self.updated // 1_000_000,
        }


def _job(row: Any) -> Job:
    return Job(
        row.task_id, row.study_id, row.model, row.model_version, row.status, row.stage,
        row.step, row.attempts, row.lease_until, row.worker, row.error, row.report_id,
        row.created, row.updated,
    )  # fmt: skip


def active_key(study_id: str, model: str, version: str) -> str:
    return f"{study_id}|{model}|{version}"


class Jobs:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, task_id: str, study_id: str, model: str, version: str) -> tuple[str, bool]:
        """Register a job for a Task. Returns (the Task whose job runs, whether this call
        created it): when the same study and model version is already queued or running,
        that job's Task; when this Task already has its job, (this Task, False)."""
        stamp = now_us()
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(ai_jobs).values(
                        task_id=task_id,
                        study_id=study_id,
                        model=model,
                        model_version=version,
                        active_key=active_key(study_id, model, version),
                        status="queued",
                        stage="decode",
                        step="queued",
                        attempts=0,
                        created=stamp,
                        updated=stamp,
                    )  # fmt: skip
                )
            return task_id, True
        except exc.IntegrityError:
            pass
        if self.get(task_id) is not None:
            return task_id, False
        running = self.active_for(study_id, model, version)
        return (running.task_id, False) if running else (task_id, False)

    def get(self, task_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ai_jobs).where(J.task_id == task_id)).first()
        return _job(row) if row else None

    def active_for(self, study_id: str, model: str, version: str) -> Job | None:
        key = active_key(study_id, model, version)
        with self.engine.connect() as conn:
            row = conn.execute(select(ai_jobs).where(J.active_key == key)).first()
        return _job(row) if row else None

    def latest_for(self, study_id: str, model: str, version: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(ai_jobs)
                .where(J.study_id == study_id, J.model == model, J.model_version == version)
                .order_by(J.pk.desc())
                .limit(1)
            ).first()
        return _job(row) if row else None

    def claim(self, task_id: str, stage: str, worker: str, lease: float) -> bool:
        """Take a stage of a job: queued, or running under a lease that has expired."""
        stamp = now_us()
        return bool(
            QUEUE.claim(
                self.engine,
                worker,
                lease,
                [J.task_id == task_id, J.stage == stage, J.status.in_(ACTIVE)],
                values={"status": "running", "attempts": J.attempts + 1, "updated": stamp},
            )  # fmt: skip
        )

    def renew(self, task_id: str, worker: str, lease: float) -> bool:
        return QUEUE.renew(
            self.engine, [task_id], worker, lease, [J.status == "running"], updated=now_us()
        )

    def _set(self, task_id: str, worker: str | None, **values: Any) -> bool:
        conditions = [J.task_id == task_id]
        if worker is not None:  # only the lease holder may move its job on
            conditions += [J.worker == worker, J.status == "running"]
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(ai_jobs).where(*conditions).values(updated=now_us(), **values)
            )
        return bool(result.rowcount)

    def step(self, task_id: str, worker: str, step: str) -> bool:
        return self._set(task_id, worker, step=step)

    def advance(self, task_id: str, worker: str, stage: str) -> bool:
        """Hand the job on to its next stage (queued again, for whichever worker takes it)."""
        return self._set(task_id, worker, stage=stage, status="queued", lease_until=None)

    def release(self, task_id: str, worker: str, error: str) -> bool:
        """A transient failure: back to queued, to be retried."""
        return self._set(task_id, worker, status="queued", lease_until=None, error=error)

    def asked_again(self, task_id: str) -> bool:
        """A queued job was submitted again (the sweeper): its wait restarts now."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(ai_jobs)
                .where(J.task_id == task_id, J.status == "queued")
                .values(updated=now_us())
            )
        return bool(result.rowcount)

    def restart(self, task_id: str, stage: str = "decode") -> bool:
        return self._set(task_id, None, status="queued", stage=stage, lease_until=None)

    def finish(
        self, task_id: str, status: str, error: str | None = None, report_id: str | None = None
    ) -> None:
        job = self._timing(task_id)
        ended = self._set(
            task_id, None, status=status, step="done" if status == "done" else "failed",
            active_key=None, lease_until=None, error=error, report_id=report_id,
        )  # fmt: skip
        if ended and job is not None and job.status in ACTIVE:  # counted once, when it ends
            model, created = job.model, job.created
            metrics.AI_JOBS_FINISHED.labels(model, status).inc()
            metrics.AI_JOB_SECONDS.labels(model).observe(max(0, now_us() - created) / 1e6)

    def _timing(self, task_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(J.model, J.status, J.created).where(J.task_id == task_id)
            ).first()

    def stale(self, queued_before: int, limit: int = 100) -> list[Job]:
        """Jobs nobody works on: running with a lease expired, or queued (asked for) since
        before `queued_before` and for at least as long as they had waited before that (so a
        job waiting behind a long backlog is asked for again at doubling intervals, not at
        every sweep)."""
        stamp = now_us()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ai_jobs)
                .where(
                    or_(
                        and_(
                            J.status == "queued",
                            J.updated < queued_before,
                            2 * J.updated - J.created <= stamp,
                        ),
                        and_(J.status == "running", J.lease_until < stamp),
                    )
                )
                .order_by(J.pk)
                .limit(limit)
            ).all()
        return [_job(r) for r in rows]

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        query = select(ai_jobs).order_by(J.pk.desc()).limit(limit)
        if status:
            query = query.where(J.status == status)
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(query).all()]
