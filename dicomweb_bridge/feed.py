"""Following Orthanc's change feed: every `StableStudy` becomes a sync of that study.

`GET /changes?since=N` is read in batches; the cursor (the last `Seq` handled) is stored in
the database after each batch, so a restart continues where the last run stopped. A study
that cannot be mapped is logged and skipped (it would block the feed forever otherwise); a
PACS or database outage stops the batch and it is retried from the stored cursor.
"""

from __future__ import annotations

import logging
import threading

from dicomweb_bridge.pacs import Pacs
from dicomweb_bridge.state import BridgeState
from dicomweb_bridge.sync import Syncer
from fhir_server.errors import FhirError
from mappers.dicom import MappingError

log = logging.getLogger("interop.imaging")
CURSOR = "orthanc-changes"


class ChangeFeed:
    def __init__(self, pacs: Pacs, syncer: Syncer, state: BridgeState, batch: int = 100) -> None:
        self.pacs = pacs
        self.syncer = syncer
        self.state = state
        self.batch = batch

    def poll(self) -> int:
        """Handle every change after the cursor; returns the number of studies synced."""
        since = int(self.state.cursor(CURSOR) or 0)
        synced = 0
        while True:
            page = self.pacs.changes(since, self.batch)
            for change in page.get("Changes", []):
                if change.get("ChangeType") == "StableStudy":
                    synced += self._study(str(change["ID"]))
            last = int(page.get("Last", since))
            if last != since:
                self.state.set_cursor(CURSOR, str(last))
                since = last
            if page.get("Done", True) or not page.get("Changes"):
                return synced

    def _study(self, orthanc_id: str) -> int:
        uid = self.pacs.orthanc_study_uid(orthanc_id)
        if uid is None:  # deleted since; the deletion callback or reconciliation handles it
            return 0
        try:
            result = self.syncer.sync_study(uid, orthanc_id)
        except (MappingError, FhirError) as exc:
            log.warning("study %s could not be synced: %s", orthanc_id, exc)
            return 0
        log.info("study synced", extra={"orthanc_id": orthanc_id, "outcome": result.outcome})
        return 1

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Poll until `stop` is set; errors are logged and retried after `interval`."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - keep following; the cursor has not moved
                log.exception("change feed poll failed; retrying")
            stop.wait(interval)
