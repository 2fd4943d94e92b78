"""Bulk Data jobs on the Celery worker (queue `bulk`), when Redis is configured.

The task runs the same job function as the embedded runner, in the worker process, against
the same database and `INTEROP_BULK_DIR` (shared storage when the worker is another host).
Late acknowledgement: a worker killed mid-export leaves the message to be delivered again,
and the job table's heartbeat lets the next run take the job over.
"""

from __future__ import annotations

from functools import lru_cache

from ai_worker.celery_app import celery, make_celery
from fhir_server.bulk.service import BulkService
from interop.settings import Settings

QUEUE = "bulk"


@lru_cache(maxsize=1)
def worker_service() -> BulkService:
    from fhir_server.store.audit import audited
    from fhir_server.store.db import create_db_engine
    from fhir_server.store.repository import Store
    from interop.app import bulk_config
    from interop.settings import get_settings

    settings = get_settings()
    store = Store(create_db_engine(settings.effective_database_url, 2), settings.effective_base_url)
    audited(store, settings.auth_enabled and settings.auth_audit)
    return BulkService.embedded(
        store, bulk_config(settings), settings.effective_base_url, settings.auth_enabled
    )


@celery.task(name="bulk.run", acks_late=True)
def run(job_id: str) -> None:
    worker_service().run(job_id)


class Submitter:
    """The API process's BulkService.submitter: a job is a message to the `bulk` queue, on
    the broker of this app's settings."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings)

    def __call__(self, job_id: str) -> None:
        self.app.send_task("bulk.run", args=[job_id], queue=QUEUE)
