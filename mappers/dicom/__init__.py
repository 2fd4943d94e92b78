"""DICOM (DICOM JSON or pydicom datasets) -> FHIR ImagingStudy and Patient; pure, no I/O."""

from mappers.dicom.json import DicomJson, from_dataset
from mappers.dicom.patient import MappingError, identity, patient
from mappers.dicom.study import Options, imaging_study, study_bundle, study_identifier

__all__ = [
    "DicomJson",
    "MappingError",
    "Options",
    "from_dataset",
    "identity",
    "imaging_study",
    "patient",
    "study_bundle",
    "study_identifier",
]
