"""Bulk Data jobs on the Celery worker (queue `bulk`), when Redis is configured, and the
worker process's AI service: both built from one runtime per pool process.

The task runs the same job function as the embedded runner, in the worker process, against
the same database and `INTEROP_BULK_DIR` (shared storage when the worker is another host).
Late acknowledgement: a worker killed mid-export leaves the message to be delivered again,
and the job table's heartbeat lets the next run take the job over.
"""

from __future__ import annotations

from functools import lru_cache

from ai_worker.celery_app import CelerySubmitter, celery, make_celery
from ai_worker.config import AiConfig
from ai_worker.service import AiService
from fhir_server.bulk.service import BulkService
from interop.runtime import Runtime

QUEUE = "bulk"


@lru_cache(maxsize=1)
def worker_runtime() -> Runtime:
    """The pool process's runtime (built after the fork: its own engine and pool)."""
    return Runtime(migrate=False, pool_size=2)


def ai_service() -> AiService:
    runtime = worker_runtime()
    return AiService(runtime.ai_config(), runtime.ctx, submitter=CelerySubmitter(celery))


@lru_cache(maxsize=1)
def worker_service() -> BulkService:
    runtime = worker_runtime()
    return BulkService.embedded(
        runtime.store, runtime.bulk_config(), runtime.base_url, runtime.settings.auth_enabled
    )


@celery.task(name="bulk.run", acks_late=True)
def run(job_id: str) -> None:
    worker_service().run(job_id)


class Submitter:
    """The API process's BulkService.submitter: a job is a message to the `bulk` queue, on
    the broker of this app's settings."""

    def __init__(self, config: AiConfig) -> None:
        self.app = make_celery(config)

    def __call__(self, job_id: str) -> None:
        self.app.send_task("bulk.run", args=[job_id], queue=QUEUE)
