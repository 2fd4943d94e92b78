"""Reading DICOM JSON (PS3.18 F.2), the one input format of this mapper.

QIDO-RS and WADO-RS metadata already speak it; a pydicom Dataset is turned into it by
`from_dataset`, so uploads, STOW-RS and the change feed share one mapping.
"""

from __future__ import annotations

from typing import Any

DicomJson = dict[str, Any]

# Tags by keyword, as 8 hex digits (the keys of DICOM JSON).
TAGS = {
    "SpecificCharacterSet": "00080005",
    "StudyDate": "00080020",
    "SeriesDate": "00080021",
    "StudyTime": "00080030",
    "SeriesTime": "00080031",
    "SOPClassUID": "00080016",
    "SOPInstanceUID": "00080018",
    "AccessionNumber": "00080050",
    "IssuerOfAccessionNumberSequence": "00080051",
    "Modality": "00080060",
    "ModalitiesInStudy": "00080061",
    "ReferringPhysicianName": "00080090",
    "TimezoneOffsetFromUTC": "00080201",
    "ProcedureCodeSequence": "00081032",
    "StudyDescription": "00081030",
    "SeriesDescription": "0008103E",
    "PatientName": "00100010",
    "PatientID": "00100020",
    "IssuerOfPatientID": "00100021",
    "PatientBirthDate": "00100030",
    "PatientSex": "00100040",
    "BodyPartExamined": "00180015",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "StudyID": "00200010",
    "SeriesNumber": "00200011",
    "InstanceNumber": "00200013",
    "Laterality": "00200060",
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfSeriesRelatedInstances": "00201209",
    "DocumentTitle": "00420010",
    "ContentLabel": "00700080",
    "ReasonForTheRequestedProcedure": "00401002",
    "ReasonForPerformedProcedureCodeSequence": "00401012",
    "ConceptNameCodeSequence": "0040A043",
    "CodeValue": "00080100",
    "CodingSchemeDesignator": "00080102",
    "CodeMeaning": "00080104",
}


def values(data: DicomJson, keyword: str) -> list[Any]:
    element = data.get(TAGS[keyword])
    if not isinstance(element, dict):
        return []
    found = element.get("Value")
    return found if isinstance(found, list) else []


def text(data: DicomJson, keyword: str) -> str:
    """First value as a trimmed string ('' when absent); numbers become their text."""
    found = values(data, keyword)
    if not found or found[0] is None:
        return ""
    first = found[0]
    if isinstance(first, dict):  # a PN given where text was wanted: its alphabetic group
        return str(first.get("Alphabetic", "")).strip()
    if isinstance(first, float) and first.is_integer():
        first = int(first)
    return str(first).strip()


def number(data: DicomJson, keyword: str) -> int | None:
    raw = text(data, keyword)
    try:
        return int(float(raw)) if raw else None
    except ValueError:
        return None


def person_name(data: DicomJson, keyword: str) -> dict[str, str]:
    """PN value: its Alphabetic / Ideographic / Phonetic component groups."""
    found = values(data, keyword)
    if not found:
        return {}
    first = found[0]
    if isinstance(first, str):
        return {"Alphabetic": first}
    if isinstance(first, dict):
        return {k: str(v) for k, v in first.items() if isinstance(v, str) and v}
    return {}


def items(data: DicomJson, keyword: str) -> list[DicomJson]:
    return [i for i in values(data, keyword) if isinstance(i, dict)]


def from_dataset(ds: Any) -> DicomJson:
    """A pydicom Dataset as DICOM JSON, without bulk data (pixels never enter a mapping)."""

    def drop_bulk(_element: Any) -> str:
        return ""

    out: DicomJson = ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=drop_bulk)
    return out
