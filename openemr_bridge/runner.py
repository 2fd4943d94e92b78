"""Wires settings to the bridge for `interop openemr ...` and the scheduled sync in `serve`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fhir_server.api.interactions import Context
from fhir_server.store.audit import audited
from fhir_server.store.db import create_db_engine, upgrade
from fhir_server.store.repository import Store
from interop.settings import Settings
from openemr_bridge import setup
from openemr_bridge.sync import Progress, Summary, Syncer

log = logging.getLogger("interop.openemr")


def store_context(settings: Settings) -> Context:
    engine = create_db_engine(settings.effective_database_url, 2)
    upgrade(engine)
    base = settings.effective_base_url
    return Context(
        audited(Store(engine, base), settings.auth_enabled and settings.auth_audit), base
    )


def run_sync(
    settings: Settings,
    ctx: Context,
    full: bool = False,
    patient: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    source = setup.source(settings)
    syncer = Syncer(ctx, source, setup.systems(settings), settings.openemr_page_size)
    if patient:
        return syncer.sync_patient(patient, full=True)[0]
    return syncer.run(full=full, progress=progress)


def start_schedule(
    settings: Settings, ctx: Context, stop: threading.Event | None = None
) -> threading.Thread | None:
    """For `interop serve`: a sync every INTEROP_OPENEMR_SYNC_INTERVAL seconds (0: none)."""
    if not settings.openemr_url or settings.openemr_sync_interval <= 0:
        return None
    stop = stop or threading.Event()
    interval = settings.openemr_sync_interval

    def loop(run: Callable[[], Summary] = lambda: run_sync(settings, ctx)) -> None:
        while not stop.is_set():
            try:
                summary = run()
                log.info("OpenEMR sync done", extra=summary.as_json() | {"reasons": None})
            except Exception:
                log.exception("OpenEMR sync failed; next try in %s s", interval)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="openemr-sync", daemon=True)
    thread.start()
    return thread
