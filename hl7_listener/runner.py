"""Wires settings to the inbox, processor and MLLP server (used by `interop mllp`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import threading
from collections.abc import Callable

from fhir_server.api.interactions import Context
from fhir_server.store.db import create_db_engine, upgrade
from fhir_server.store.repository import Store
from hl7_listener.inbox import Inbox
from hl7_listener.mllp import MllpServer
from hl7_listener.processor import Processor
from interop.settings import Settings

log = logging.getLogger("interop.hl7")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.mllp_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key or None)
    if settings.mllp_tls_ca:
        ctx.load_verify_locations(settings.mllp_tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_processor(settings: Settings) -> Processor:
    engine = create_db_engine(settings.effective_database_url, settings.db_pool_size)
    upgrade(engine)
    base = settings.effective_base_url
    ctx = Context(Store(engine, base), base)
    return Processor(
        Inbox(engine), ctx, settings.mllp_ack_mode, settings.hl7_authorities,
        settings.hl7_time_zone, settings.hl7_mapping_workers,
    )  # fmt: skip


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    started: Callable[[int], None] | None = None,
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM in the main thread). Maps messages left
    'received' by an earlier run first, then keeps mapping ack-after-store ones."""
    proc = build_processor(settings)
    server = MllpServer(
        proc.handle, settings.mllp_host, settings.mllp_port, settings.mllp_max_frame,
        settings.mllp_idle_timeout, tls_context(settings), proc.reject_oversize,
        settings.mllp_max_connections, proc.handle_many,
    )  # fmt: skip
    port = await server.start()
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
    proc.ctx.store.engine.dispose()
    log.info("MLLP listener stopped")


class ListenerThread:
    """For `interop serve`: the listener beside uvicorn, in a thread with its own event loop.
    `stop()` after uvicorn returns stops accepting, lets in-flight messages finish and maps
    what is pending, so shutting down loses nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mllp", daemon=True)

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

            await serve(self.settings, self._stop, started)

        try:
            asyncio.run(main())
        finally:
            self._ready.set()
