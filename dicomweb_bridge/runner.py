"""The bridge's background work for `interop serve`: follow the feed (or poll), reconcile.

`ImagingSync.step` is one pass; the runtime runs it every INTEROP_IMAGING_POLL_SECONDS as a
service (interop.services), which backs off while the PACS is down. The cursor is only
advanced after a batch is applied, so stopping mid-batch loses nothing.
"""

from __future__ import annotations

import logging
import time

from dicomweb_bridge.poller import Poller
from dicomweb_bridge.service import Bridge

log = logging.getLogger("interop.imaging")
RECONCILE = "reconcile-requested"  # set by the deletion callback for series/instances


class ImagingSync:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.poller = Poller(bridge.pacs, bridge.syncer, bridge.state)
        reconcile_every = bridge.config.imaging_reconcile_seconds
        self.next_reconcile = time.monotonic() + min(reconcile_every, 60.0)

    def step(self) -> None:
        """Follow the change feed (Orthanc) or poll QIDO-RS once; reconcile deletions when
        asked to or when due. Raises when the PACS cannot be reached (nothing was skipped)."""
        if self.bridge.feed is not None:
            self.bridge.feed.poll()
        else:
            self.poller.poll()
        reconcile_every = self.bridge.config.imaging_reconcile_seconds
        asked = self.bridge.state.cursor(RECONCILE) == "1"
        if asked or (reconcile_every and time.monotonic() >= self.next_reconcile):
            self.next_reconcile = time.monotonic() + (reconcile_every or 3600.0)
            self.bridge.state.set_cursor(RECONCILE, "0")
            done = self.poller.reconcile()
            if done.seen:
                log.info("reconciled deletions", extra={"outcomes": done.outcomes})
