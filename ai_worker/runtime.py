"""Wiring for `interop serve`: the AI service and where its jobs run (its FHIR operations are
registered by interop.ai_operations).

With INTEROP_REDIS_URL set, jobs are Celery messages for `interop worker` processes; without
it (the embedded default) this process runs them on INTEROP_AI_WORKER_THREADS threads.
"""

from __future__ import annotations

import logging
from typing import Any

from ai_worker.embedded import EmbeddedRunner
from ai_worker.errors import BadInput
from ai_worker.service import AiService
from fhir_server.store.outbox import Change
from fhir_server.store.repository import HasStore

log = logging.getLogger("interop.ai")


class AiRuntime:
    def __init__(self, settings: Any, ctx: HasStore) -> None:
        self.service = AiService(settings, ctx)
        self.runner: EmbeddedRunner | None = None
        # the sweeper resubmits jobs nobody works on: a dead process's (lease run out), or
        # queued and not taken up (never queued: Redis was down; or its message was lost with
        # a worker or with Redis): the database decides, not the broker's redelivery
        sweep = min(30.0, getattr(settings, "lease_seconds", 30.0))
        self.sweep_seconds, self.grace_seconds = sweep, sweep
        if settings.redis_url:
            from ai_worker.celery_app import CelerySubmitter, make_celery

            self.service.submitter = CelerySubmitter(make_celery(settings))
            self.sweep_seconds = min(60.0, settings.ai_lease_seconds)
            self.grace_seconds = settings.ai_lease_seconds
        elif settings.ai_worker_threads > 0:
            self.runner = EmbeddedRunner(self.service, settings.ai_worker_threads)
            self.service.submitter = self.runner

    TYPES = frozenset({"ImagingStudy", "Task"})

    def on_change(self, res_type: str, res_id: str, interaction: str) -> None:
        self.service.on_change(res_type, res_id, interaction)

    def handle(self, change: Change) -> None:
        """The outbox consumer `ai-trigger` (ImagingStudy and Task changes): at least once,
        idempotent. Bad input is logged and done with; transient errors raise, so the
        runner retries the change with backoff."""
        try:
            self.service.on_change(change.res_type, change.res_id, change.interaction)
        except BadInput as exc:
            log.warning("AI trigger on %s: %s", change.reference, exc)

    def sweep(self) -> None:
        """One round of the sweeper (the app runs it as a singleton: one process of the
        deployment at a time)."""
        if self.service.submitter is None:
            return
        found = self.service.recover(self.grace_seconds)
        if found:
            log.info("AI sweeper resubmitted %d job(s)", len(found))

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
