"""Synthetic DICOM studies for tests, benchmarks and demos (nothing is downloaded).

Small images, but real files: several series, multi-frame, RLE-compressed, and names in
Latin-1 and UTF-8 with ideographic and phonetic groups, so the whole path (pydicom, STOW-RS,
Orthanc, DICOMweb JSON, the mapper) sees what a modality would send.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage, "OT": SecondaryCaptureImageStorage}


@dataclass
class StudySpec:
    patient_id: str = "P-001"
    patient_name: str = "Doe^Jane"
    issuer: str = ""
    sex: str = "F"
    birth_date: str = "19700101"
    accession: str = ""
    description: str = "Synthetic study"
    series: tuple[tuple[str, int], ...] = (("CT", 2), ("MR", 1))  # (modality, instances)
    frames: int = 1
    size: int = 8
    rle: bool = False
    charset: str = "ISO_IR 192"
    body_part: str = "CHEST"
    study_uid: str = ""
    study_date: str = "20240305"
    study_time: str = "101500"


def instance(
    spec: StudySpec, study_uid: str, series_uid: str, series_no: int, modality: str, number: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = spec.charset
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName = spec.patient_id, spec.patient_name
    if spec.issuer:
        ds.IssuerOfPatientID = spec.issuer
    ds.PatientSex, ds.PatientBirthDate = spec.sex, spec.birth_date
    ds.AccessionNumber = spec.accession
    ds.StudyDate, ds.StudyTime = spec.study_date, spec.study_time
    ds.SeriesDate, ds.SeriesTime = spec.study_date, spec.study_time
    ds.StudyDescription = spec.description
    ds.SeriesDescription = f"{modality} series {series_no}"
    ds.Modality, ds.BodyPartExamined = modality, spec.body_part
    ds.SeriesNumber, ds.InstanceNumber = series_no, number
    ds.StudyID, ds.ReferringPhysicianName = "1", "House^Gregory^^Dr"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = spec.size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    pixels = bytes((i * 7 + number) % 256 for i in range(spec.size * spec.size * 2))
    ds.PixelData = pixels * spec.frames
    if spec.rle:
        import numpy as np

        shape = (spec.frames, spec.size, spec.size) if spec.frames > 1 else (spec.size,) * 2
        arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(shape) & 0x0FFF
        ds.compress(RLELossless, arr, generate_instance_uid=False)
    return ds


def study(spec: StudySpec | None = None) -> list[Dataset]:
    """All instances of one study, series numbered from 1."""
    spec = spec or StudySpec()
    study_uid = spec.study_uid or generate_uid()
    out = []
    for series_no, (modality, count) in enumerate(spec.series, start=1):
        series_uid = generate_uid()
        for number in range(1, count + 1):
            out.append(instance(spec, study_uid, series_uid, series_no, modality, number))
    return out


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
