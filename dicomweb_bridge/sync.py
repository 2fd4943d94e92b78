"""One study from the PACS -> one FHIR transaction: the rule every sync path shares.

The change feed, the QIDO-RS poller, backfill, uploads and STOW-RS all end in `sync_study`:
read the study's metadata (WADO-RS), map it (mappers.dicom), and apply the Bundle through the
one write path, unless it is byte-for-byte the Bundle applied last time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, replace

import orjson

from dicomweb_bridge.pacs import Pacs, orthanc_study_id
from dicomweb_bridge.state import BridgeState, SyncedStudy
from fhir_server.search.query import matching_ids
from fhir_server.store.audit import Actor
from fhir_server.store.repository import HasStore
from mappers.dicom import Options, study_bundle
from mappers.dicom import json as dj
from mappers.dicom.study import study_query

log = logging.getLogger("interop.imaging")


@dataclass(frozen=True)
class SyncResult:
    study_uid: str
    outcome: str  # created|updated|unchanged|deleted|missing
    resource_id: str | None = None


class Syncer:
    def __init__(self, ctx: HasStore, pacs: Pacs, state: BridgeState, options: Options) -> None:
        self.ctx = ctx
        self.pacs = pacs
        self.state = state
        self.options = options
        # Conditional creates of one patient from two threads would both create (see hl7).
        self.lock = threading.Lock()
        # the audit trail's agent for every change this bridge makes: the PACS it mirrors
        self.actor = Actor.of_channel("orthanc", pacs.dicomweb_url)

    def sync_study(
        self, study_uid: str, orthanc_id: str | None = None,
        instances: list[dj.DicomJson] | None = None,
    ) -> SyncResult:  # fmt: skip
        """Bring the ImagingStudy in line with the PACS (PacsError, FhirError, MappingError).
        `instances`: the study's metadata when the caller has fetched it already."""
        if instances is None:
            instances = self.pacs.study_metadata(study_uid)
        if not instances:
            return SyncResult(study_uid, "deleted" if self.remove_study(study_uid) else "missing")
        accession = dj.text(instances[0], "AccessionNumber")
        options = replace(self.options, service_request=self._order(accession))
        bundle = study_bundle(instances, options)
        digest = hashlib.sha256(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS)).hexdigest()
        known = self.state.study(study_uid)
        if known and known.digest == digest and self._exists(known.resource_id):
            return SyncResult(study_uid, "unchanged", known.resource_id)
        with self.lock:
            study = self.ctx.store.apply(bundle, self.actor)[-1]
        resource_id = str(study.res_id)
        if orthanc_id is None and self.pacs.is_orthanc:
            orthanc_id = orthanc_study_id(dj.text(instances[0], "PatientID"), study_uid)
        count = bundle["entry"][-1]["resource"].get("numberOfInstances", 0)
        self.state.record(SyncedStudy(study_uid, orthanc_id, resource_id, digest, count))
        created = study.outcome == "created"
        return SyncResult(study_uid, "created" if created else "updated", resource_id)

    def remove_study(self, study_uid: str) -> bool:
        """Delete the study's ImagingStudy (history kept); True when there was one."""
        found = self._ids("ImagingStudy", [("identifier", study_query(study_uid)[11:])])
        if found:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "DELETE", "url": f"ImagingStudy/{res_id}"}}
                for res_id in found]}  # fmt: skip
            with self.lock:
                self.ctx.store.apply(bundle, self.actor)
        self.state.forget(study_uid)
        return bool(found)

    def _order(self, accession: str) -> str | None:
        """The ServiceRequest this accession number identifies (HL7 orders meet images)."""
        if not accession:
            return None
        found = self._ids("ServiceRequest", [("identifier", accession)])
        return f"ServiceRequest/{found[0]}" if len(found) == 1 else None

    def _exists(self, resource_id: str) -> bool:
        stored = self.ctx.store.read("ImagingStudy", resource_id)
        return stored is not None and not stored.deleted

    def _ids(self, res_type: str, params: list[tuple[str, str]]) -> list[str]:
        """Ids of the resources a search matches (the bridge sees everything it mirrors)."""
        store = self.ctx.store
        with store.connection() as conn:
            return matching_ids(conn, res_type, params, store.base_url, None)
