"""OpenEMR `patient_data` rows <-> FHIR Patient.

Inbound keeps everything a clinician recognises (names, birth date, sex, address, phones,
email) and the three OpenEMR identities (pid, uuid, pubpid as MRN). Outbound builds the
`POST /api/patient` payload and refuses, with a reason, what OpenEMR's validator would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mappers.openemr.systems import Systems

Row = dict[str, Any]
MR_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
    "text": "Medical record number",
}
SEX_TO_GENDER = {"female": "female", "male": "male", "": "unknown", "unknown": "unknown",
                 "unk": "unknown"}  # fmt: skip
GENDER_TO_SEX = {"female": "Female", "male": "Male"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _text(row: Row, key: str) -> str:
    value = row.get(key)
    return str(value).strip() if value is not None else ""


def _date(value: Any) -> str | None:
    """OpenEMR dates: `YYYY-MM-DD`, datetimes, or the MySQL zero date meaning "none"."""
    text = str(value or "").strip()[:10]
    if not DATE.match(text) or text.startswith("0000"):
        return None
    return text


def _datetime(value: Any, zone: str = "UTC") -> str | None:
    """A MySQL DATETIME (local, no offset) -> FHIR dateTime with the installation's offset."""
    text = str(value or "").strip()
    if not text or text.startswith("0000"):
        return None
    if len(text) == 10:
        return _date(text)
    if re.match(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$", text):
        local = datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=ZoneInfo(zone))
        return local.isoformat().replace("+00:00", "Z")
    return _date(text)


def gender(sex: str) -> str:
    """`Female`/`Male` -> female/male; blank or Unknown/UNK -> unknown; anything else other."""
    return SEX_TO_GENDER.get(sex.strip().lower(), "other")


def patient_to_fhir(row: Row, systems: Systems) -> dict[str, Any]:
    """One `patient_data` row (API or database) -> canonical Patient (no id: matched by uuid)."""
    uuid, pid = _text(row, "uuid"), _text(row, "pid")
    if not uuid and not pid:
        raise ValueError("an OpenEMR patient needs a uuid or a pid")
    identifiers: list[dict[str, Any]] = []
    if uuid:
        identifiers.append({"use": "secondary", "system": systems.uuid, "value": uuid})
    if pid:
        identifiers.append({"use": "secondary", "system": systems.pid, "value": pid})
    if _text(row, "pubpid"):
        identifiers.append(
            {"use": "usual", "type": MR_TYPE, "system": systems.mrn, "value": _text(row, "pubpid")}
        )
    res: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers, "active": True}
    given = [g for g in (_text(row, "fname"), _text(row, "mname")) if g]
    name: dict[str, Any] = {"use": "official"}
    if _text(row, "lname"):
        name["family"] = _text(row, "lname")
    if given:
        name["given"] = given
    if _text(row, "title"):
        name["prefix"] = [_text(row, "title")]
    if len(name) > 1:
        res["name"] = [name]
    telecom = [
        {"system": system, "value": _text(row, key), "use": use}
        for key, system, use in (
            ("phone_home", "phone", "home"),
            ("phone_biz", "phone", "work"),
            ("phone_cell", "phone", "mobile"),
            ("email", "email", "home"),
        )
        if _text(row, key)
    ]
    if telecom:
        res["telecom"] = telecom
    res["gender"] = gender(_text(row, "sex"))
    if birth := _date(row.get("DOB")):
        res["birthDate"] = birth
    if deceased := _datetime(row.get("deceased_date"), systems.zone):
        res["deceasedDateTime"] = deceased
    address = _address(row)
    if address:
        res["address"] = [address]
    return res


def _address(row: Row) -> dict[str, Any]:
    lines = [x for x in (_text(row, "street"), _text(row, "street_line_2")) if x]
    address: dict[str, Any] = {"line": lines} if lines else {}
    for key, field in (
        ("city", "city"),
        ("state", "state"),
        ("postal_code", "postalCode"),
        ("country_code", "country"),
    ):
        if _text(row, key):
            address[field] = _text(row, key)
    return address


@dataclass(frozen=True)
class Refusal:
    """Why a Patient cannot be created in OpenEMR: `code` is the searchable tag code."""

    code: str
    reason: str


def patient_to_openemr(patient: dict[str, Any], source_value: str) -> dict[str, str] | Refusal:
    """Canonical Patient -> `POST /api/patient` body, or why OpenEMR would refuse it.

    OpenEMR requires fname (1-255), lname (2-255) and DOB as YYYY-MM-DD; `sex` is only
    length-checked (4-30), so FHIR `unknown` becomes `Unknown`, never `UNK`. The source
    identifier goes into `pubpid`, which OpenEMR keeps and returns, so a retried create can
    recognise the patient it already made.
    """
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    family = str(name.get("family") or "").strip()
    given = [str(g).strip() for g in name.get("given") or [] if str(g).strip()]
    birth = str(patient.get("birthDate") or "")
    if not family:
        return Refusal("missing-family-name", "no family name (OpenEMR lname is required)")
    if len(family) < 2:
        return Refusal("family-name-too-short", "family name shorter than 2 characters")
    if len(family) > 255:
        return Refusal("family-name-too-long", "family name longer than 255 characters")
    if not given:
        return Refusal("missing-given-name", "no given name (OpenEMR fname is required)")
    if len(given[0]) > 255:
        return Refusal("given-name-too-long", "given name longer than 255 characters")
    if not birth:
        return Refusal("missing-birth-date", "no birth date (OpenEMR DOB is required)")
    if not DATE.match(birth):
        return Refusal("partial-birth-date", f"birth date '{birth}' is not a full YYYY-MM-DD date")
    body = {
        "fname": given[0],
        "lname": family,
        "DOB": birth,
        "sex": GENDER_TO_SEX.get(str(patient.get("gender") or ""), "Unknown"),
    }
    if len(given) > 1:
        body["mname"] = " ".join(given[1:])[:255]
    if source_value:
        body["pubpid"] = source_value[:255]
    return body
