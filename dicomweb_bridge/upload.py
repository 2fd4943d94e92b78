"""DICOM files in through this server: read, put in the right patient's hands, STOW, sync.

Shared by `POST /imaging/upload` (multipart/form-data, a folder upload) and STOW-RS on
`POST /dicomweb/studies`. Each file is judged alone: a broken or non-DICOM file is reported
with its reason and the rest go on.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from dicomweb_bridge.pacs import PacsError
from dicomweb_bridge.service import Bridge
from fhir_server.errors import FhirError
from fhir_server.store.repository import FhirReads
from mappers.dicom.patient import FHIR_PATIENT_SYSTEM, issuer_for, to_pn

REQUIRED = ("SOPClassUID", "SOPInstanceUID")
BATCH_BYTES = 256 * 1024 * 1024
BATCH_FILES = 500
Guard = Callable[[list[str]], None]
"""Judges the study UIDs an upload is about to store into (raises FhirError to refuse)."""


@dataclass
class Incoming:
    """One file: its bytes, or a seekable file (read lazily), or a dataset already read."""

    name: str
    data: bytes | None = None
    dataset: Dataset | None = None
    group: str | None = None
    file: IO[bytes] | None = None

    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.file is not None:
            here = self.file.tell()
            end = self.file.seek(0, 2)
            self.file.seek(here)
            return end
        return 0


@dataclass
class UploadResult:
    stored: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"stored": self.stored, "failed": self.failed, "imagingStudies": self.studies}


@dataclass(frozen=True)
class PatientTags:
    patient_id: str
    issuer: str
    name: str
    reference: str


def read(item: Incoming) -> Dataset:
    """The file as a dataset; ValueError with a reason a user can act on."""
    if item.dataset is not None:
        return item.dataset
    source = item.file if item.file is not None else io.BytesIO(item.data or b"")
    try:
        # large values (pixel data) stay in the file until the STOW-RS request is written
        ds = pydicom.dcmread(source, defer_size="1 MB")
    except InvalidDicomError:
        raise ValueError("not a DICOM file (no DICM prefix)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken files
        raise ValueError(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    missing = [k for k in REQUIRED if not str(ds.get(k, "") or "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return ds


def patient_tags(reads: FhirReads, reference: str, bridge: Bridge) -> PatientTags:
    """PatientID/IssuerOfPatientID/PatientName from a canonical Patient (FhirError if none)."""
    parts = reference.strip().split("/")
    if len(parts) != 2 or parts[0] != "Patient" or not parts[1]:
        raise FhirError(400, f"patient must be 'Patient/<id>', not '{reference}'", "invalid")
    patient = reads.read(parts[0], parts[1])
    options = bridge.syncer.options
    pid, issuer = patient["id"], FHIR_PATIENT_SYSTEM
    for ident in patient.get("identifier", []):
        system, value = ident.get("system", ""), ident.get("value", "")
        mapped = issuer_for(system, options.issuers, options.default_system) if system else None
        if value and mapped is not None and len(value) <= 64:
            pid, issuer = value, mapped
            break
    names = patient.get("name") or [{}]
    return PatientTags(pid, issuer, to_pn(names[0]), f"Patient/{patient['id']}")


def prepare(
    datasets: list[tuple[Incoming, Dataset]],
    patient: PatientTags | None,
    description: str | None,
    group: bool,
) -> None:
    """Apply the upload rules in place: patient tags, new UIDs per group, dates filled."""
    study_uid = generate_uid() if group else None
    series: dict[str, str] = {}
    now = datetime.now(UTC)
    for item, ds in datasets:
        if patient is not None:
            ds.PatientID = patient.patient_id
            if patient.issuer:
                ds.IssuerOfPatientID = patient.issuer
            elif "IssuerOfPatientID" in ds:
                del ds.IssuerOfPatientID
            ds.PatientName = patient.name
        if study_uid is not None:
            ds.StudyInstanceUID = study_uid
            key = item.group or ""
            if key not in series:
                series[key] = generate_uid()
            ds.SeriesInstanceUID = series[key]
            ds.SeriesNumber = list(series).index(key) + 1
        if description:
            ds.StudyDescription = description
        if not str(ds.get("StudyDate", "") or ""):
            ds.StudyDate = now.strftime("%Y%m%d")
        if not str(ds.get("StudyTime", "") or ""):
            ds.StudyTime = now.strftime("%H%M%S")
        if not str(ds.get("StudyInstanceUID", "") or ""):
            ds.StudyInstanceUID = generate_uid()
        if not str(ds.get("SeriesInstanceUID", "") or ""):
            ds.SeriesInstanceUID = generate_uid()


def _stow_outcome(response: Dataset) -> tuple[set[str], dict[str, str]]:
    """SOP instance UIDs the PACS stored, and those it refused with their reasons."""
    stored = {str(i.get("ReferencedSOPInstanceUID", "")) for i in
              response.get("ReferencedSOPSequence", [])}  # fmt: skip
    failed = {
        str(
            i.get("ReferencedSOPInstanceUID", "")
        ): f"PACS refused it (reason {i.get('FailureReason', '?')})"
        for i in response.get("FailedSOPSequence", [])
    }
    return stored, failed


def store(
    bridge: Bridge, reads: FhirReads, items: Iterable[Incoming], patient: str | None = None,
    description: str | None = None, group: bool = False, guard: Guard | None = None,
) -> UploadResult:  # fmt: skip
    """Read, prepare, STOW-RS, then sync every touched study; per-file failures reported.
    `guard` sees the study UIDs after preparation and before anything is stored."""
    result = UploadResult()
    good: list[tuple[Incoming, Dataset]] = []
    for item in items:
        try:
            good.append((item, read(item)))
        except ValueError as exc:
            result.failed.append({"file": item.name, "reason": str(exc)})
    tags = patient_tags(reads, patient, bridge) if patient else None
    prepare(good, tags, description, group)
    if guard is not None and good:
        guard(list(dict.fromkeys(str(ds.StudyInstanceUID) for _, ds in good)))
    studies: list[str] = []
    for batch in _batches(good):
        _stow_batch(bridge, batch, result, studies)
    _sync_studies(bridge, studies, result)
    return result


def _batches(good: list[tuple[Incoming, Dataset]]) -> Iterator[list[tuple[Incoming, Dataset]]]:
    """STOW-RS requests of at most BATCH_BYTES / BATCH_FILES: dicomweb-client builds each
    request body in memory, so a folder of gigabytes goes in slices."""
    batch: list[tuple[Incoming, Dataset]] = []
    size = 0
    for item, ds in good:
        if batch and (size + item.size() > BATCH_BYTES or len(batch) >= BATCH_FILES):
            yield batch
            batch, size = [], 0
        batch.append((item, ds))
        size += item.size()
    if batch:
        yield batch


def _stow_batch(
    bridge: Bridge, good: list[tuple[Incoming, Dataset]], result: UploadResult, studies: list[str]
) -> None:
    try:
        response = bridge.pacs.stow([ds for _, ds in good])
    except PacsError as exc:
        result.failed.extend({"file": i.name, "reason": str(exc)} for i, _ in good)
        return
    stored, refused = _stow_outcome(response)
    for item, ds in good:
        sop = str(ds.SOPInstanceUID)
        if sop in refused or (stored and sop not in stored):
            result.failed.append({"file": item.name, "reason": refused.get(sop, "not stored")})
            continue
        result.stored.append({"file": item.name, "sopInstanceUid": sop,
                              "studyInstanceUid": str(ds.StudyInstanceUID)})  # fmt: skip
        if str(ds.StudyInstanceUID) not in studies:
            studies.append(str(ds.StudyInstanceUID))


def _sync_studies(bridge: Bridge, studies: list[str], result: UploadResult) -> None:
    for uid in studies:
        synced = bridge.syncer.sync_study(uid)
        if synced.resource_id:
            stored = bridge.syncer.ctx.store.read("ImagingStudy", synced.resource_id)
            if stored is not None and stored.body:
                result.studies.append(orjson.loads(stored.body))
