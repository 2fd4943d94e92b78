"""The bulk service one app holds: job table, runner and the environment jobs run in."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.bulk.config import BulkConfig
from fhir_server.bulk.export import BulkEnv
from fhir_server.bulk.jobs import JobRunner, JobStore
from fhir_server.store.repository import Store


@dataclass
class BulkService:
    jobs: JobStore
    env: BulkEnv
    runner: JobRunner | None  # None: a worker elsewhere (Celery) runs submitted jobs

    @classmethod
    def embedded(cls, store: Store, config: BulkConfig, base_url: str, auth: bool) -> BulkService:
        jobs = JobStore(store, config)
        env = BulkEnv(store, base_url.rstrip("/"), auth)
        return cls(jobs, env, JobRunner(jobs, env))

    def submit(self, job_id: str) -> None:
        if self.runner is not None:
            self.runner.submit(job_id)

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
