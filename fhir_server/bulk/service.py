"""The bulk service one app holds: job table, runner and the environment jobs run in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.bulk.config import BulkConfig
from fhir_server.bulk.export import BulkEnv
from fhir_server.bulk.jobs import JobRunner, JobStore, run_job
from fhir_server.clock import now_us
from fhir_server.store.repository import Store


@dataclass
class BulkService:
    jobs: JobStore
    env: BulkEnv
    runner: JobRunner | None  # the in-process runner (embedded default)
    # set to hand jobs to a worker instead (e.g. a Celery task's `delay`); the worker builds
    # the same service and calls `run(job_id)`
    submitter: Callable[[str], None] | None = None

    @classmethod
    def embedded(cls, store: Store, config: BulkConfig, base_url: str, auth: bool) -> BulkService:
        jobs = JobStore(store, config)
        env = BulkEnv(store, base_url.rstrip("/"), auth)
        return cls(jobs, env, JobRunner(jobs, env))

    def submit(self, job_id: str) -> None:
        if self.submitter is not None:
            self.submitter(job_id)
        elif self.runner is not None:
            self.runner.submit(job_id)

    def run(self, job_id: str) -> None:
        """Run one job here and now (the body of a worker task)."""
        run_job(self.jobs, job_id, self.env)

    def start(self) -> None:
        """Start the runner and sweep once (jobs orphaned by a crash, or never started)."""
        if self.runner is not None:
            self.runner.start()
            self.sweep(grace_seconds=0)

    def sweep(self, grace_seconds: float = 60.0) -> None:
        """Remove expired jobs and their files; restart exports whose runner died (lease run
        out) and hand on jobs accepted but never started. Run by one process of the
        deployment at a time (the app's `bulk-sweeper` singleton); safe anywhere, since a job
        runs only for whoever claims it."""
        self.jobs.cleanup()
        self.jobs.recover()
        # a job accepted this minute is on its way to a runner already
        for job_id in self.jobs.waiting(now_us() - int(grace_seconds * 1_000_000)):
            self.submit(job_id)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
