"""Instances of one study (DICOM JSON) -> ImagingStudy and the transaction Bundle applying it.

Follows the FHIR R4 ImagingStudy page and Microsoft's DICOMcast: the study is identified by
`urn:dicom:uid|urn:oid:<StudyInstanceUID>` (conditional PUT, so a study synced again updates
the same resource), the patient is matched or created by identifier (conditional create),
counts are counted from the instances given, not copied from the PACS's summary attributes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mappers.dicom import json as dj
from mappers.dicom.bodypart import body_site, laterality
from mappers.dicom.patient import (
    DEFAULT_PATIENT_SYSTEM,
    FHIR_PATIENT_SYSTEM,
    MappingError,
    identity,
    patient,
)
from mappers.dicom.values import date_time, display_name

DCM = "http://dicom.nema.org/resources/ontology/DCM"
UID_SYSTEM = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_SYSTEM = "urn:interop:endpoint"
ENDPOINT_VALUE = "dicomweb-proxy"
SCHEMES = {"SCT": "http://snomed.info/sct", "SRT": "http://snomed.info/sct",
           "LN": "http://loinc.org", "DCM": DCM, "RADLEX": "http://radlex.org",
           "RADLEX_PLAYBOOK": "http://www.radlex.org"}  # fmt: skip
Resource = dict[str, Any]


@dataclass(frozen=True)
class Options:
    """What the mapping cannot read from DICOM: configuration and facts the caller looked up."""

    issuers: Mapping[str, str] = field(default_factory=dict)
    default_system: str = DEFAULT_PATIENT_SYSTEM
    time_zone: str = "UTC"
    endpoint_address: str = ""  # our DICOMweb proxy root; empty: no Endpoint
    service_request: str | None = None  # "ServiceRequest/<id>" with this accession number
    patient: str | None = None  # "Patient/<id>" when the caller already knows the patient


def study_identifier(study_uid: str) -> Resource:
    return {"system": UID_SYSTEM, "value": f"urn:oid:{study_uid}"}


def study_query(study_uid: str) -> str:
    return f"identifier={UID_SYSTEM}|urn:oid:{study_uid}"


def _full_url(study_uid: str, what: str) -> str:
    """Deterministic placeholders: the same study maps to the same Bundle, byte for byte."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, f'{study_uid}/{what}')}"


def _code(item: dj.DicomJson) -> Resource | None:
    code = dj.text(item, "CodeValue")
    meaning = dj.text(item, "CodeMeaning")
    if not code and not meaning:
        return None
    coding: Resource = {}
    scheme = dj.text(item, "CodingSchemeDesignator")
    if scheme:
        coding["system"] = SCHEMES.get(scheme.upper(), f"urn:dicom:scheme:{scheme}")
    if code:
        coding["code"] = code
    if meaning:
        coding["display"] = meaning
    return coding


def _concepts(data: dj.DicomJson, sequence: str, text: str | None = None) -> list[Resource]:
    codings = [c for c in (_code(i) for i in dj.items(data, sequence)) if c]
    if codings:
        return [{"coding": [c]} for c in codings]
    plain = dj.text(data, text) if text else ""
    return [{"text": plain}] if plain else []


def _modality(code: str) -> Resource:
    return {"system": DCM, "code": code or "OT"}


def _instance(data: dj.DicomJson) -> Resource | None:
    uid, sop_class = dj.text(data, "SOPInstanceUID"), dj.text(data, "SOPClassUID")
    if not uid or not sop_class:
        return None  # not a storable DICOM object; FHIR requires both
    out: Resource = {
        "uid": uid,
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
    }
    num = dj.number(data, "InstanceNumber")
    if num is not None and num >= 0:
        out["number"] = num
    title = dj.text(data, "DocumentTitle") or dj.text(data, "ContentLabel")
    if not title:
        concept = next(iter(dj.items(data, "ConceptNameCodeSequence")), None)
        title = dj.text(concept, "CodeMeaning") if concept else ""
    if title:
        out["title"] = title
    return out


def _series(members: list[dj.DicomJson], zone: str) -> Resource:
    first = members[0]
    out: Resource = {
        "uid": dj.text(first, "SeriesInstanceUID"),
        "modality": _modality(dj.text(first, "Modality")),
    }
    num = dj.number(first, "SeriesNumber")
    if num is not None and num >= 0:
        out["number"] = num
    desc = dj.text(first, "SeriesDescription")
    if desc:
        out["description"] = desc
    started = date_time(
        dj.text(first, "SeriesDate"), dj.text(first, "SeriesTime"),
        dj.text(first, "TimezoneOffsetFromUTC"), zone,
    )  # fmt: skip
    if started:
        out["started"] = started
    site = body_site(dj.text(first, "BodyPartExamined"))
    if site:
        out["bodySite"] = site
    side = laterality(dj.text(first, "Laterality"))
    if side:
        out["laterality"] = side
    instances = [i for i in (_instance(m) for m in members) if i]
    instances.sort(key=lambda i: (i.get("number", 0), i["uid"]))
    out["numberOfInstances"] = len(instances)
    if instances:
        out["instance"] = instances
    return out


def imaging_study(
    instances: Sequence[dj.DicomJson], subject: str, options: Options, endpoint: str | None = None
) -> Resource:
    """The ImagingStudy for these instances, its subject (and endpoint) already resolved."""
    if not instances:
        raise MappingError("a study needs at least one instance")
    first = instances[0]
    study_uid = dj.text(first, "StudyInstanceUID")
    if not study_uid:
        raise MappingError("StudyInstanceUID (0020,000D) is missing")
    groups: dict[str, list[dj.DicomJson]] = {}
    for inst in instances:
        if dj.text(inst, "StudyInstanceUID") not in ("", study_uid):
            raise MappingError("instances of more than one study were given")
        key = dj.text(inst, "SeriesInstanceUID")
        if key:
            groups.setdefault(key, []).append(inst)
    series = [_series(m, options.time_zone) for m in groups.values()]
    series.sort(key=lambda s: (s.get("number", 0), s["uid"]))
    identifiers = [study_identifier(study_uid)]
    accession = dj.text(first, "AccessionNumber")
    if accession:
        identifiers.append(
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession}
        )
    res: Resource = {
        "resourceType": "ImagingStudy",
        "identifier": identifiers,
        "status": "available",
        "subject": {"reference": subject},
    }
    started = date_time(
        dj.text(first, "StudyDate"), dj.text(first, "StudyTime"),
        dj.text(first, "TimezoneOffsetFromUTC"), options.time_zone,
    )  # fmt: skip
    if started:
        res["started"] = started
    if options.service_request:
        res["basedOn"] = [{"reference": options.service_request}]
    referrer = display_name(dj.person_name(first, "ReferringPhysicianName").get("Alphabetic", ""))
    if referrer:
        res["referrer"] = {"display": referrer}
    modalities = dict.fromkeys(
        [str(m) for m in dj.values(first, "ModalitiesInStudy") if m]
        + [s["modality"]["code"] for s in series]
    )
    if modalities:
        res["modality"] = [_modality(m) for m in modalities]
    if endpoint:
        res["endpoint"] = [{"reference": endpoint}]
    res["numberOfSeries"] = len(series)
    res["numberOfInstances"] = sum(s["numberOfInstances"] for s in series)
    procedure = _concepts(first, "ProcedureCodeSequence")
    if procedure:
        res["procedureCode"] = procedure
    reason = _concepts(first, "ReasonForPerformedProcedureCodeSequence",
                       "ReasonForTheRequestedProcedure")  # fmt: skip
    if reason:
        res["reasonCode"] = reason
    desc = dj.text(first, "StudyDescription")
    if desc:
        res["description"] = desc
    if series:
        res["series"] = series
    return res


def endpoint(address: str) -> Resource:
    """The Endpoint every ImagingStudy points at: our secured DICOMweb proxy."""
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": ENDPOINT_SYSTEM, "value": ENDPOINT_VALUE}],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "DICOMweb (WADO-RS, QIDO-RS, STOW-RS) through the interop server",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def study_bundle(instances: Sequence[dj.DicomJson], options: Options | None = None) -> Resource:
    """One transaction: Patient matched or created, Endpoint, ImagingStudy created or updated."""
    options = options or Options()
    if not instances:
        raise MappingError("a study needs at least one instance")
    first = instances[0]
    study_uid = dj.text(first, "StudyInstanceUID")
    if not study_uid:
        raise MappingError("StudyInstanceUID (0020,000D) is missing")
    entries: list[Resource] = []
    subject = options.patient
    system, value = identity(first, options.issuers, options.default_system)
    if subject is None and system == FHIR_PATIENT_SYSTEM:
        subject = f"Patient/{value}"
    if subject is None:
        subject = _full_url(study_uid, "patient")
        entries.append({
            "fullUrl": subject,
            "resource": patient(first, options.issuers, options.default_system),
            "request": {"method": "POST", "url": "Patient",
                        "ifNoneExist": f"identifier={system}|{value}"},
        })  # fmt: skip
    endpoint_ref = None
    if options.endpoint_address:
        endpoint_ref = _full_url(study_uid, "endpoint")
        entries.append({
            "fullUrl": endpoint_ref,
            "resource": endpoint(options.endpoint_address),
            "request": {"method": "POST", "url": "Endpoint",
                        "ifNoneExist": f"identifier={ENDPOINT_SYSTEM}|{ENDPOINT_VALUE}"},
        })  # fmt: skip
    entries.append({
        "fullUrl": _full_url(study_uid, "study"),
        "resource": imaging_study(instances, subject, options, endpoint_ref),
        "request": {"method": "PUT", "url": f"ImagingStudy?{study_query(study_uid)}"},
    })  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
