"""DICOM patient module -> canonical Patient, identified by PatientID + IssuerOfPatientID.

Identity is `system|value`, never the name (DESIGN.md, "Identity"). The system comes from
IssuerOfPatientID through the configured table (like HL7 assigning authorities); an OID
issuer becomes `urn:oid:`, any other issuer `urn:dicom:issuer:<issuer>`, and no issuer
the configured default system.

Missing PatientID (allowed in DICOM, common in anonymised data): the study gets a Patient
of its own, identified by `urn:interop:dicom:study-patient|<StudyInstanceUID>`. Two such
studies are never merged by name; an operator can link or merge them later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mappers.dicom import json as dj
from mappers.dicom.values import date, gender, names

DEFAULT_PATIENT_SYSTEM = "urn:interop:dicom:patient-id"
NO_PATIENT_ID_SYSTEM = "urn:interop:dicom:study-patient"


class MappingError(ValueError):
    """The DICOM content cannot be mapped; the text says what is missing."""


def patient_system(issuer: str, issuers: Mapping[str, str], default: str) -> str:
    issuer = issuer.strip()
    if not issuer:
        return default
    if issuer in issuers:
        return issuers[issuer]
    if re.fullmatch(r"\d+(\.\d+)+", issuer):
        return f"urn:oid:{issuer}"
    return f"urn:dicom:issuer:{issuer}"


def identity(
    data: dj.DicomJson, issuers: Mapping[str, str], default: str = DEFAULT_PATIENT_SYSTEM
) -> tuple[str, str]:
    """(system, value) naming the patient of this instance (see the module docstring)."""
    value = dj.text(data, "PatientID")
    if value:
        return patient_system(dj.text(data, "IssuerOfPatientID"), issuers, default), value
    study = dj.text(data, "StudyInstanceUID")
    if not study:
        raise MappingError("neither PatientID nor StudyInstanceUID is present")
    return NO_PATIENT_ID_SYSTEM, study


def patient(
    data: dj.DicomJson, issuers: Mapping[str, str], default: str = DEFAULT_PATIENT_SYSTEM
) -> dict[str, Any]:
    system, value = identity(data, issuers, default)
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "gender": gender(dj.text(data, "PatientSex")),
    }
    found = names(dj.person_name(data, "PatientName"))
    if found:
        res["name"] = found
    birth = date(dj.text(data, "PatientBirthDate"))
    if birth:
        res["birthDate"] = birth
    return res
