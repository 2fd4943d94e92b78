"""Runs the MLLP server for a processor (`interop mllp`, and beside uvicorn in `interop serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import threading
from collections.abc import Callable

from hl7_listener.config import Hl7Config
from hl7_listener.mllp import MllpServer
from hl7_listener.processor import Processor

log = logging.getLogger("interop.hl7")


def tls_context(settings: Hl7Config) -> ssl.SSLContext | None:
    if not settings.mllp_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key or None)
    if settings.mllp_tls_ca:
        ctx.load_verify_locations(settings.mllp_tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve(
    settings: Hl7Config,
    proc: Processor,
    stop: asyncio.Event | None = None,
    started: Callable[[int], None] | None = None,
    running: list[MllpServer] | None = None,
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM in the main thread). Maps messages left
    'received' by an earlier run first, then keeps mapping ack-after-store ones."""
    server = MllpServer(
        proc.handle, settings.mllp_host, settings.mllp_port, settings.mllp_max_frame,
        settings.mllp_idle_timeout, tls_context(settings), proc.reject_oversize,
        settings.mllp_max_connections, proc.handle_many,
    )  # fmt: skip
    port = await server.start()
    if running is not None:  # the caller reads its health (open connections)
        running.append(server)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started(port)

    async def background() -> None:
        while not stop.is_set():
            await asyncio.to_thread(proc.process_pending)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    worker = asyncio.create_task(background())
    await stop.wait()
    await server.stop()
    await worker
    await asyncio.to_thread(proc.process_pending)
    proc.close()
    log.info("MLLP listener stopped")


class ListenerThread:
    """For `interop serve`: the listener beside uvicorn, in a thread with its own event loop.
    `stop()` after uvicorn returns stops accepting, lets in-flight messages finish and maps
    what is pending, so shutting down loses nothing."""

    def __init__(self, settings: Hl7Config, proc: Processor) -> None:
        self.settings, self.proc = settings, proc
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mllp", daemon=True)
        self._servers: list[MllpServer] = []

    def health(self) -> dict[str, int]:
        """Open sender connections (the console's dashboard shows them)."""
        return {"connections": sum(s.open_connections for s in self._servers)}

    def start(self, timeout: float = 30.0) -> int | None:
        self._thread.start()
        self._ready.wait(timeout)
        return self.port

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

            def started(port: int) -> None:
                self.port = port
                self._ready.set()

            await serve(self.settings, self.proc, self._stop, started, self._servers)

        try:
            asyncio.run(main())
        except Exception:  # e.g. the port is taken: start() returns None, the caller reports
            log.exception("the MLLP listener stopped with an error")
        finally:
            self._ready.set()
