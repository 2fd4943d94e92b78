"""DICOM patient module -> canonical Patient, identified by PatientID + IssuerOfPatientID.

Identity is `system|value`, never the name (DESIGN.md, "Identity"). The system comes from
IssuerOfPatientID through the configured table (like HL7 assigning authorities); an OID
issuer becomes `urn:oid:`, an issuer that is a URI is the system itself (our uploads write
the canonical identifier's system there), any other issuer `urn:dicom:issuer:<issuer>`,
and no issuer the configured default system.

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
# IssuerOfPatientID written by our own uploads for a Patient without identifiers: the
# PatientID is then the FHIR id itself, and the study refers to that Patient directly.
FHIR_PATIENT_SYSTEM = "urn:interop:fhir:Patient"


class MappingError(ValueError):
    """The DICOM content cannot be mapped; the text says what is missing."""


def patient_system(issuer: str, issuers: Mapping[str, str], default: str) -> str:
    issuer = issuer.strip()
    if not issuer:
        return default
    if issuer in issuers:
        return issuers[issuer]
    if ":" in issuer:  # already a URI: written by our own upload from a canonical identifier
        return issuer
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


def issuer_for(system: str, issuers: Mapping[str, str], default: str) -> str | None:
    """The IssuerOfPatientID that maps back to `system` (the inverse of `patient_system`);
    None when it would not fit the 64 characters of LO."""
    if system == default:
        return ""
    for issuer, mapped in issuers.items():
        if mapped == system:
            return issuer
    if system.startswith("urn:oid:"):
        return system[8:]
    if system.startswith("urn:dicom:issuer:"):
        return system[17:]
    return system if len(system) <= 64 else None


def to_pn(name: Mapping[str, Any]) -> str:
    """HumanName -> PN `Family^Given^Middle^Prefix^Suffix` (trailing carets dropped)."""
    given = list(name.get("given") or [])
    parts = [
        str(name.get("family") or ""),
        given[0] if given else "",
        " ".join(given[1:]),
        " ".join(name.get("prefix") or []),
        " ".join(name.get("suffix") or []),
    ]
    return "^".join(parts).rstrip("^")
