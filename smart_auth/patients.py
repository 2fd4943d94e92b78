"""What the pickers show: patients (searchable by name) and a patient's encounters, read
from the FHIR store's current rows through the same search index as the API."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, false, select

from fhir_server.search.query import matching_ids
from fhir_server.store.models import resources

R = resources.c


def list_patients(engine: Engine, search: str = "", limit: int = 50) -> list[tuple[str, str]]:
    """Most recently changed patients, or those whose name starts with `search` (FHIR
    `Patient?name=` semantics: any part of any name, case and accents ignored)."""
    query = select(R.res_id, R.body).where(R.res_type == "Patient", R.deleted == false())
    with engine.connect() as conn:
        if search.strip():
            ids = matching_ids(conn, "Patient", [("name", search.strip())], "")
            query = query.where(R.res_id.in_(ids))
        rows = conn.execute(query.order_by(R.last_updated.desc()).limit(limit)).all()
    return [(res_id, _label(orjson.loads(body)) if body else res_id) for res_id, body in rows]


def list_encounters(engine: Engine, patient_id: str, limit: int = 50) -> list[tuple[str, str]]:
    """The patient's encounters, newest change first, labelled for a person to choose."""
    with engine.connect() as conn:
        ids = matching_ids(conn, "Encounter", [("patient", f"Patient/{patient_id[:64]}")], "")
        rows = conn.execute(
            select(R.res_id, R.body)
            .where(R.res_type == "Encounter", R.deleted == false(), R.res_id.in_(ids))
            .order_by(R.last_updated.desc())
            .limit(limit)
        ).all()
    return [(res_id, _encounter_label(orjson.loads(body))) for res_id, body in rows]


def patient_exists(engine: Engine, patient_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(R.res_id).where(
                    R.res_type == "Patient", R.res_id == patient_id[:64], R.deleted == false()
                )
            ).first()
            is not None
        )


def _label(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or []:
        if isinstance(name, dict):
            if isinstance(name.get("text"), str):
                return name["text"]
            given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
            family = name.get("family") if isinstance(name.get("family"), str) else ""
            if given or family:
                return f"{given} {family}".strip()
    return str(patient.get("id", ""))


def _encounter_label(encounter: dict[str, Any]) -> str:
    parts = []
    kind = encounter.get("class")
    if isinstance(kind, dict):
        parts.append(str(kind.get("display") or kind.get("code") or ""))
    for concept in encounter.get("type") or []:
        if isinstance(concept, dict) and concept.get("text"):
            parts.append(str(concept["text"]))
    period = encounter.get("period")
    if isinstance(period, dict) and period.get("start"):
        parts.append(str(period["start"])[:16].replace("T", " "))
    parts.append(str(encounter.get("status", "")))
    return " · ".join(p for p in parts if p) or str(encounter.get("id", ""))
