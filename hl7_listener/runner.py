"""Wires settings to the inbox, processor and MLLP server (used by `interop mllp`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import threading

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
        settings.hl7_time_zone,
    )  # fmt: skip


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; maps leftover 'received' messages first and in background."""
    proc = build_processor(settings)
    server = MllpServer(
        proc.handle, settings.mllp_host, settings.mllp_port, settings.mllp_max_frame,
        settings.mllp_idle_timeout, tls_context(settings),
    )  # fmt: skip
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

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
    log.info("MLLP listener stopped")


def start_in_thread(settings: Settings) -> threading.Thread:
    """For `interop serve`: the listener beside uvicorn. Messages are committed before
    their ACK, and 'received' ones are mapped on the next start, so exiting with the
    process loses nothing."""
    thread = threading.Thread(target=lambda: asyncio.run(serve(settings)), name="mllp", daemon=True)
    thread.start()
    return thread
