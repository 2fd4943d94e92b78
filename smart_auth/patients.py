"""What the patient picker shows: patients read straight from the FHIR store's current rows."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, false, select

from fhir_server.store.models import resources

R = resources.c


def list_patients(engine: Engine, limit: int = 100) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(R.res_id, R.body)
            .where(R.res_type == "Patient", R.deleted == false())
            .order_by(R.last_updated.desc())
            .limit(limit)
        ).all()
    return [(res_id, _label(orjson.loads(body)) if body else res_id) for res_id, body in rows]


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
