"""Wiring for `interop serve`: the AI service, where its jobs run, and its FHIR operations.

With INTEROP_REDIS_URL set, jobs are Celery messages for `interop worker` processes; without
it (the embedded default) this process runs them on INTEROP_AI_WORKER_THREADS threads.
"""

from __future__ import annotations

from typing import Any

from ai_worker.embedded import EmbeddedRunner
from ai_worker.operations import register
from ai_worker.service import AiService
from fhir_server.api.interactions import Context


class AiRuntime:
    def __init__(self, settings: Any, ctx: Context) -> None:
        self.service = AiService(settings, ctx)
        self.runner: EmbeddedRunner | None = None
        if settings.redis_url:
            from ai_worker.celery_app import CelerySubmitter, make_celery

            self.service.submitter = CelerySubmitter(make_celery(settings))
        elif settings.ai_worker_threads > 0:
            self.runner = EmbeddedRunner(self.service, settings.ai_worker_threads)
            self.service.submitter = self.runner
        register(ctx.operations, self.service)

    def on_change(self, res_type: str, res_id: str, interaction: str) -> None:
        """The outbox consumer's handler (ImagingStudy and Task changes)."""
        self.service.on_change(res_type, res_id, interaction)

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
