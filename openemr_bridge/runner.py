"""One sync run for `interop openemr sync` and the scheduled sync in `serve` (a service of
the runtime every INTEROP_OPENEMR_SYNC_INTERVAL seconds)."""

from __future__ import annotations

import logging

from fhir_server.store.repository import HasStore
from openemr_bridge import setup
from openemr_bridge.config import BridgeSettings
from openemr_bridge.sync import Progress, Summary, Syncer

log = logging.getLogger("interop.openemr")


def run_sync(
    settings: BridgeSettings,
    ctx: HasStore,
    full: bool = False,
    patient: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    source = setup.source(settings)
    syncer = Syncer(ctx, source, setup.systems(settings), settings.openemr_page_size)
    if patient:
        return syncer.sync_patient(patient, full=True)[0]
    return syncer.run(full=full, progress=progress)


def scheduled_sync(settings: BridgeSettings, ctx: HasStore) -> Summary:
    """One scheduled run, logged; raises when OpenEMR cannot be reached (the service backs
    off and retries)."""
    summary = run_sync(settings, ctx)
    log.info("OpenEMR sync done", extra=summary.as_json() | {"reasons": None})
    return summary
