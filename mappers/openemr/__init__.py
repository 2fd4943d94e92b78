"""OpenEMR rows <-> canonical FHIR (pure: no network, no database)."""

from mappers.openemr.bundle import PatientRecord, patient_query, to_bundle
from mappers.openemr.patient import Refusal, patient_to_fhir, patient_to_openemr
from mappers.openemr.systems import Systems

__all__ = [
    "PatientRecord",
    "Refusal",
    "Systems",
    "patient_query",
    "patient_to_fhir",
    "patient_to_openemr",
    "to_bundle",
]
