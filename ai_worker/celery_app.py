"""Celery on Redis: `interop worker` consumes the decode and/or inference queues.

Late acknowledgement and one task at a time per process (prefetch 1): a message leaves Redis
only when its stage is done, so a worker killed mid-task leaves it to be delivered again
(at once if only the pool process died, after the visibility timeout if the whole worker did).
The job table's lease makes that redelivery safe: a stage is never run twice at once.
Decoding and inference are separate queues so GPU hosts can take only `ai.infer`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task

from ai_worker.cache import VolumeCache
from ai_worker.errors import TransientError
from ai_worker.pixels.volume import Volume
from ai_worker.service import AiService

DECODE_QUEUE = "ai.decode"
INFER_QUEUE = "ai.infer"
log = logging.getLogger("interop.ai")


def make_celery(settings: Any) -> Celery:
    app = Celery("interop", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        task_ignore_result=True,
        task_default_queue=DECODE_QUEUE,
        task_routes={"ai.decode": {"queue": DECODE_QUEUE}, "ai.infer": {"queue": INFER_QUEUE}},
        broker_transport_options={
            "visibility_timeout": settings.ai_visibility_timeout,
            # look for a dead worker's messages every few seconds (kombu: every 100 s)
            "unacked_restore_interval": max(1, min(10, settings.ai_visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
            # a worker killed while it held the restore lock must not block restores for
            # kombu's default 300 s
            "unacked_mutex_expire": max(2, min(300, settings.ai_visibility_timeout // 2)),
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


class CelerySubmitter:
    """Used by the API process: a job is a message to the decode queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(self, task_id: str) -> None:
        try:
            self.app.send_task("ai.decode", args=[task_id], queue=DECODE_QUEUE)
        except Exception as exc:  # noqa: BLE001 - the job row waits; the sweeper resends
            log.warning("could not queue AI Task/%s (%s); it waits in the job table", task_id, exc)


@lru_cache(maxsize=1)
def worker_service() -> AiService:
    """The worker process's service: its own engine and store, built from the environment."""
    from fhir_server.api.interactions import Context
    from fhir_server.store.audit import audited
    from fhir_server.store.db import create_db_engine
    from fhir_server.store.repository import Store
    from interop.settings import get_settings

    settings = get_settings()
    engine = create_db_engine(settings.effective_database_url, 2)
    store = Store(engine, settings.effective_base_url)
    audited(store, settings.auth_enabled and settings.auth_audit)
    ctx = Context(store, settings.effective_base_url)
    return AiService(settings, ctx, submitter=CelerySubmitter(celery))


def _celery_from_env() -> Celery:
    from interop.settings import get_settings

    return make_celery(get_settings())


celery = _celery_from_env()


def _retry_or_fail(task: Task, svc: AiService, task_id: str, exc: TransientError) -> None:
    retries = int(task.request.retries or 0)
    if retries >= svc.settings.ai_max_retries:
        svc.fail(task_id, f"gave up after {retries + 1} attempts: {exc}")
        return
    raise task.retry(countdown=svc.backoff(retries), exc=exc, max_retries=None)


@celery.task(bind=True, name="ai.decode")
def decode(self: Task, task_id: str) -> str:
    svc = worker_service()
    worker = svc.worker_name()
    try:
        result = svc.decode_stage(task_id, worker)
    except TransientError as exc:
        _retry_or_fail(self, svc, task_id, exc)
        return "retry"
    if isinstance(result, Volume):
        VolumeCache(svc.settings.effective_ai_cache_dir).save(task_id, result)
        svc.jobs.advance(task_id, worker, "infer")
        infer.apply_async(args=[task_id], queue=INFER_QUEUE)
        return "decoded"
    if result.reason == "elsewhere" and result.job and result.job.status == "queued":
        infer.apply_async(args=[task_id], queue=INFER_QUEUE)  # the hand-over was lost: redo it
    elif result.reason == "busy" and result.job and result.job.lease_until:
        raise self.retry(countdown=svc.lease, max_retries=None)  # check on the lease holder
    return result.reason


@celery.task(bind=True, name="ai.infer")
def infer(self: Task, task_id: str) -> str:
    svc = worker_service()
    worker = svc.worker_name()
    cache = VolumeCache(svc.settings.effective_ai_cache_dir)
    try:
        result = svc.infer_stage(task_id, worker, cache.load(task_id))
    except TransientError as exc:
        _retry_or_fail(self, svc, task_id, exc)
        return "retry"
    queued = result.job is not None and result.job.status == "queued"
    if result.reason == "redecode" or (result.reason == "elsewhere" and queued):
        decode.apply_async(args=[task_id], queue=DECODE_QUEUE)
    elif result.reason == "busy":
        raise self.retry(countdown=svc.lease, max_retries=None)
    if result.reason in ("done", "finished"):
        cache.drop(task_id)
    return result.reason
