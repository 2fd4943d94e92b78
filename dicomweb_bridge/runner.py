"""The bridge's background work for `interop serve`: follow the feed (or poll), reconcile.

Runs in one daemon thread with its own engine and store, beside uvicorn, and stops cleanly
on `stop()`: the cursor is only advanced after a batch is applied, so stopping mid-batch
loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from dicomweb_bridge.poller import Poller
from dicomweb_bridge.service import Bridge
from fhir_server.api.interactions import Context
from fhir_server.store.audit import audited
from fhir_server.store.db import create_db_engine
from fhir_server.store.repository import Store
from interop.settings import Settings

log = logging.getLogger("interop.imaging")
RECONCILE = "reconcile-requested"  # set by the deletion callback for series/instances


class BridgeRunner:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.poller = Poller(bridge.pacs, bridge.syncer, bridge.state)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="imaging-sync", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        self.bridge.close()

    def _run(self) -> None:
        settings = self.bridge.settings
        interval = settings.imaging_poll_seconds
        reconcile_every = settings.imaging_reconcile_seconds
        next_reconcile = time.monotonic() + min(reconcile_every, 60.0)
        wait = interval
        while not self.stop_event.is_set():
            try:
                if self.bridge.feed is not None:
                    self.bridge.feed.poll()
                else:
                    self.poller.poll()
                asked = self.bridge.state.cursor(RECONCILE) == "1"
                if asked or (reconcile_every and time.monotonic() >= next_reconcile):
                    next_reconcile = time.monotonic() + (reconcile_every or 3600.0)
                    self.bridge.state.set_cursor(RECONCILE, "0")
                    done = self.poller.reconcile()
                    if done.seen:
                        log.info("reconciled deletions", extra={"outcomes": done.outcomes})
                wait = interval
            except Exception:  # noqa: BLE001 - keep running; nothing was skipped
                log.exception("imaging sync failed; retrying in %.0f s", wait)
                wait = min(wait * 2, 60.0)  # a PACS that is down is not hammered
            self.stop_event.wait(wait)
        log.info("imaging sync stopped")


def start(settings: Settings) -> BridgeRunner | None:
    """Start the sync thread when imaging is configured (None otherwise)."""
    engine = create_db_engine(settings.effective_database_url, 2)
    base = settings.effective_base_url
    bridge = Bridge.build(
        settings,
        Context(audited(Store(engine, base), settings.auth_enabled and settings.auth_audit), base),
    )
    if bridge is None:
        engine.dispose()
        return None
    runner = BridgeRunner(bridge)
    runner.start()
    log.info("imaging sync started", extra={"feed": bridge.feed is not None})
    return runner
