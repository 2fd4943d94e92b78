"""One OpenEMR patient and its clinical records -> one FHIR transaction Bundle.

Every entry is a conditional PUT on the record's OpenEMR identifier, so applying the same
record twice updates (or, unchanged, leaves alone) what the first run created.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from mappers.openemr import clinical
from mappers.openemr.patient import patient_to_fhir
from mappers.openemr.systems import Systems

Row = dict[str, Any]


@dataclass
class PatientRecord:
    """What OpenEMR holds for one patient, as rows from its API or its database."""

    patient: Row
    encounters: list[Row] = field(default_factory=list)
    vitals: list[Row] = field(default_factory=list)  # rows may carry `eid` / `encounter`
    problems: list[Row] = field(default_factory=list)
    allergies: list[Row] = field(default_factory=list)
    medications: list[Row] = field(default_factory=list)
    prescriptions: list[Row] = field(default_factory=list)


def patient_query(patient: dict[str, Any], systems: Systems) -> str:
    """The conditional-update query that finds the canonical twin of an OpenEMR patient."""
    for ident in patient.get("identifier", []):
        if ident.get("system") == systems.uuid:
            return f"identifier={systems.uuid}|{ident['value']}"
    pid = next(i["value"] for i in patient["identifier"] if i.get("system") == systems.pid)
    return f"identifier={systems.pid}|{pid}"


def _entry(resource: dict[str, Any], query: str) -> tuple[dict[str, Any], str]:
    full = f"urn:uuid:{uuid.uuid4()}"
    request = {"method": "PUT", "url": f"{resource['resourceType']}?{query}"}
    return {"fullUrl": full, "resource": resource, "request": request}, full


def _query(resource: dict[str, Any]) -> str:
    ident = resource["identifier"][0]
    return f"identifier={ident['system']}|{ident['value']}"


def to_bundle(
    record: PatientRecord, systems: Systems, patient: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The transaction Bundle for one record; `patient` overrides the mapped Patient (merged)."""
    mapped = patient or patient_to_fhir(record.patient, systems)
    entry, subject = _entry(mapped, patient_query(mapped, systems))
    entries = [entry]
    by_number: dict[str, str] = {}
    for row in record.encounters:
        enc = clinical.encounter(row, subject, systems)
        enc_entry, ref = _entry(enc, _query(enc))
        entries.append(enc_entry)
        for key in ("encounter", "id", "uuid"):
            if str(row.get(key) or ""):
                by_number.setdefault(str(row[key]), ref)
    for row in record.vitals:
        eid = str(row.get("eid") or row.get("encounter") or "")
        for obs in clinical.vitals(row, subject, systems, by_number.get(eid)):
            entries.append(_entry(obs, _query(obs))[0])
    for rows, build in (
        (record.problems, clinical.condition),
        (record.allergies, clinical.allergy),
        (record.medications, clinical.medication),
        (record.prescriptions, clinical.prescription),
    ):
        for row in rows:
            res = build(row, subject, systems)
            entries.append(_entry(res, _query(res))[0])
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
