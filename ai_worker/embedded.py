"""The in-process runner: without Redis, `interop serve` runs AI jobs on its own threads.

Same stages, same job table and leases as the Celery worker; transient failures are retried
with the same backoff on a timer. Jobs left behind by a process that died are picked up by the
runtime's sweeper (ai_worker.runtime).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from ai_worker.errors import TransientError
from ai_worker.service import AiService

log = logging.getLogger("interop.ai")


class EmbeddedRunner:
    def __init__(self, service: AiService, threads: int = 1) -> None:
        self.service = service
        self.threads = max(1, threads)
        self.pool: ThreadPoolExecutor | None = None
        self._pending: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)

    def submit(self, task_id: str) -> None:
        with self._lock:
            if task_id in self._pending or self._stop.is_set():
                return
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ai-job")
            self._pending.add(task_id)
            pool = self.pool
        pool.submit(self._run, task_id)

    def _run(self, task_id: str) -> None:
        retry_in: float | None = None
        try:
            self.service.run_inline(task_id)
        except TransientError as exc:
            attempt = self._attempts.get(task_id, 0)
            if attempt >= self.service.settings.ai_max_retries:
                self.service.fail(task_id, f"gave up after {attempt + 1} attempts: {exc}")
            else:
                self._attempts[task_id] = attempt + 1
                retry_in = self.service.backoff(attempt)
                log.info("AI Task/%s: %s; retry in %.0f s", task_id, exc, retry_in)
        except Exception:  # noqa: BLE001 - keep the runner alive
            log.exception("AI Task/%s: runner error", task_id)
        with self._lock:
            self._pending.discard(task_id)
            if retry_in is None:
                self._attempts.pop(task_id, None)
            self._idle.notify_all()
        if retry_in is not None and not self._stop.is_set():
            timer = threading.Timer(retry_in, self.submit, args=(task_id,))
            timer.daemon = True
            timer.start()

    def start(self) -> None:
        self._stop.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is pending (tests, orderly shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def stop(self) -> None:
        """Finish the running job, drop queued ones (their rows wait for the next start)."""
        self._stop.set()
        with self._lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._pending.clear()
