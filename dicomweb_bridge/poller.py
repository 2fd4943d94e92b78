"""PACS without a change feed: QIDO-RS polling by study date, backfill, deletion reconciliation.

Polling asks for studies dated from the day before the stored watermark (late arrivals of
yesterday's studies are common) and syncs those that are new or whose instance count
changed. Studies without a StudyDate are invisible to a date query: backfill finds them.
Reconciliation lists every study the PACS still has and re-syncs each ImagingStudy whose
study is gone; the sync confirms with WADO-RS before deleting, so a QIDO hiccup deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from dicomweb_bridge.pacs import Pacs, PacsError
from dicomweb_bridge.state import BridgeState
from dicomweb_bridge.sync import Syncer
from fhir_server.errors import FhirError
from mappers.dicom import MappingError
from mappers.dicom import json as dj

log = logging.getLogger("interop.imaging")
CURSOR = "qido-poll"
PREFETCH_THREADS = 4
PREFETCH_BATCH = 32


@dataclass
class Summary:
    seen: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _date_range(since: date | None) -> dict[str, str]:
    return {"StudyDate": f"{since:%Y%m%d}-"} if since else {}


class Poller:
    def __init__(self, pacs: Pacs, syncer: Syncer, state: BridgeState) -> None:
        self.pacs = pacs
        self.syncer = syncer
        self.state = state

    def _sync(
        self, uid: str, summary: Summary, instances: list[dj.DicomJson] | None = None
    ) -> None:
        try:
            summary.add(self.syncer.sync_study(uid, instances=instances).outcome)
        except (MappingError, FhirError) as exc:
            summary.failed[uid] = str(exc)

    def poll(self) -> Summary:
        """New or changed studies since the watermark (generic DICOMweb PACS)."""
        stored = self.state.cursor(CURSOR)
        today = datetime.now(UTC).date()
        since = date.fromisoformat(stored) - timedelta(days=1) if stored else None
        summary = Summary()
        for found in self.pacs.iter_studies(_date_range(since)):
            uid = dj.text(found, "StudyInstanceUID")
            if not uid:
                continue
            summary.seen += 1
            known = self.state.study(uid)
            count = dj.number(found, "NumberOfStudyRelatedInstances")
            if known is not None and count is not None and known.instances == count:
                continue
            self._sync(uid, summary)
        self.state.set_cursor(CURSOR, today.isoformat())
        return summary

    def backfill(
        self, since: date | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Summary:
        """Sync every study the PACS has (from `since`); already-synced studies are no-ops.
        The list is read first, so progress knows its total."""
        uids = [u for u in (dj.text(s, "StudyInstanceUID") for s in
                            self.pacs.iter_studies(_date_range(since))) if u]  # fmt: skip
        summary = Summary()
        unique = list(dict.fromkeys(uids))
        # Reading metadata from the PACS overlaps with applying the previous studies: the
        # writes are serial (one transaction at a time), the reads need not be.
        with ThreadPoolExecutor(PREFETCH_THREADS) as pool:
            for start in range(0, len(unique), PREFETCH_BATCH):
                batch = unique[start : start + PREFETCH_BATCH]
                fetched = [pool.submit(self.pacs.study_metadata, uid) for uid in batch]
                for uid, future in zip(batch, fetched, strict=True):
                    summary.seen += 1
                    try:
                        instances = future.result()
                    except PacsError as exc:
                        summary.failed[uid] = str(exc)
                        continue
                    self._sync(uid, summary, instances)
                    if progress is not None:
                        progress(summary.seen, len(unique))
        return summary

    def reconcile(self) -> Summary:
        """Re-sync every synced study the PACS no longer has, or has with another instance
        count (deleted series or instances); the sync deletes or updates its ImagingStudy."""
        present: dict[str, int | None] = {}
        for found in self.pacs.iter_studies({"includefield": "00201208"}):
            present[dj.text(found, "StudyInstanceUID")] = dj.number(
                found, "NumberOfStudyRelatedInstances")  # fmt: skip
        summary = Summary()
        for uid in self.state.all_uids():
            known = self.state.study(uid)
            if uid in present and (known is None or present[uid] in (None, known.instances)):
                continue
            summary.seen += 1
            self._sync(uid, summary)
        return summary
