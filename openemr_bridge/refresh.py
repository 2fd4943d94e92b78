"""Read-through refresh: a Patient that came from OpenEMR is re-read from OpenEMR, through the
write path, when a client reads it and its last sync is older than INTEROP_OPENEMR_REFRESH_AGE.

A refresh that fails (OpenEMR down) never fails the read: the stored Patient is served, and the
same patient is not retried for a while, so a slow OpenEMR does not slow every read.
"""

from __future__ import annotations

import logging
import threading
import time

from openemr_bridge.sync import Syncer

log = logging.getLogger("interop.openemr")


class ReadThrough:
    def __init__(self, syncer: Syncer, max_age: int, retry_after: int = 60) -> None:
        self.syncer = syncer
        self.max_age = max_age
        self.retry_after = retry_after
        self._attempted: dict[str, float] = {}
        self._lock = threading.Lock()

    def before_read(self, res_type: str, res_id: str) -> bool:
        """Refresh Patient/res_id if it is stale; True when a refresh ran and succeeded."""
        if res_type != "Patient" or self.max_age <= 0:
            return False
        known = self.syncer.synced_at(res_id)
        now = time.time()
        if known is None or now - known[1] < self.max_age:
            return False
        with self._lock:
            if now - self._attempted.get(res_id, 0) < self.retry_after:
                return False
            self._attempted[res_id] = now
            if len(self._attempted) > 10000:
                self._attempted.clear()
        try:
            summary, _ = self.syncer.sync_patient(known[0], full=False)
        except Exception:  # noqa: BLE001 - serve what we have; the scheduled sync catches up
            log.exception("read-through refresh of Patient/%s failed", res_id)
            return False
        if summary.failed:
            log.warning("read-through refresh of Patient/%s: %s", res_id, summary.reasons)
            return False
        with self._lock:
            self._attempted.pop(res_id, None)
        return True
