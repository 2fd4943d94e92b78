"""Per-patient lanes: one patient's messages in arrival order, different patients in parallel.

Like the logical channels of Medplum's agent: a message is submitted under its patient key;
jobs of one key run one after another in submission order, jobs of different keys run on a
small pool of workers at the same time, so one slow patient never holds up a feed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Job = tuple[Callable[[], Any], "Future[Any]"]


class Lanes:
    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="hl7-map")
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Job]] = {}  # a key is here while its lane is busy

    def submit(self, key: str, fn: Callable[[], Any]) -> Future[Any]:
        """Run fn after every job submitted earlier under the same key."""
        future: Future[Any] = Future()
        with self._lock:
            lane = self._waiting.get(key)
            if lane is not None:
                lane.append((fn, future))
                return future
            self._waiting[key] = deque()
        self._pool.submit(self._run, key, fn, future)
        return future

    def _run(self, key: str, fn: Callable[[], Any], future: Future[Any]) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
        with self._lock:
            lane = self._waiting[key]
            if not lane:
                del self._waiting[key]
                return
            nxt = lane.popleft()
        self._pool.submit(self._run, key, *nxt)  # requeue: other lanes get their turn

    def busy(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
