"""The threads FHIR interactions run on, off the event loop.

`starlette.concurrency.run_in_threadpool` (anyio's `to_thread.run_sync`) costs more event-loop
time per call than a search's own Python work: a capacity limiter, a cancel scope, run-var
and async-library look-ups, and a `queue.Queue` with its condition variable. Here a call is a
`SimpleQueue.put` of the function with a copy of the caller's context (the request id for
logs, the request's time limit), and the result comes back with one `call_soon_threadsafe`.
As many threads as the database pool has connections: more would only queue for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = None


class RequestThreads:
    def __init__(self, size: int, name: str = "fhir") -> None:
        self.size = max(1, size)
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of the threads, in a copy of the caller's context."""
        if len(self._threads) < self.size:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((contextvars.copy_context(), fn, args, loop, future))
        return await future

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            context, fn, args, loop, future = job
            try:
                result = context.run(fn, *args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                _post(loop, future, None, exc)
            else:
                _post(loop, future, result, None)
            del job, context, fn, args, future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads once the work queued before has run."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            thread.join(timeout)


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled (client gone) while the thread worked
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
