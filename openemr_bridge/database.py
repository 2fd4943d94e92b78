"""Read OpenEMR's MariaDB directly (read-only) for fast initial loads of large installations.

The REST API costs several requests per patient; the database gives the same rows in a few
queries. Rows are normalised to the API's shapes (uuid as text, dates and numbers as strings)
so the same pure mappers apply. `uuid` is BINARY(16) in RFC 4122 byte order and may be NULL
for rows written outside OpenEMR: such patients are keyed by `pid:N` until OpenEMR fills it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from mappers.openemr import PatientRecord
from openemr_bridge.source import Row


def _value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value


def _rows(result: Any) -> list[Row]:
    return [{k: _value(v) for k, v in row._mapping.items()} for row in result]


class DbSource:
    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or create_engine(url, pool_pre_ping=True, pool_size=2)
        event.listen(self.engine, "connect", _read_only)

    def patients(self, limit: int, offset: int) -> list[Row]:
        with self.engine.connect() as conn:
            return _rows(
                conn.execute(
                    text("SELECT * FROM patient_data ORDER BY pid LIMIT :limit OFFSET :offset"),
                    {"limit": limit, "offset": offset},
                )
            )

    def total(self) -> int | None:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM patient_data")).scalar() or 0)

    def patient(self, key: str) -> Row | None:
        params: dict[str, Any]
        if key.startswith("pid:"):
            query, params = "SELECT * FROM patient_data WHERE pid = :pid", {"pid": int(key[4:])}
        else:
            try:
                raw = uuid.UUID(key).bytes
            except ValueError:
                return None
            query, params = "SELECT * FROM patient_data WHERE uuid = :uuid", {"uuid": raw}
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(text(query), params))
        return rows[0] if rows else None

    def record(self, patient: Row) -> PatientRecord:
        pid = int(patient["pid"])
        with self.engine.connect() as conn:

            def rows(sql: str) -> list[Row]:
                return _rows(conn.execute(text(sql), {"pid": pid}))

            lists = rows("SELECT l.*, m.drug_dosage_instructions, m.request_intent FROM lists l "
                         "LEFT JOIN lists_medication m ON m.list_id = l.id WHERE l.pid = :pid "
                         "ORDER BY l.id")  # fmt: skip
            return PatientRecord(
                patient=patient,
                encounters=rows("SELECT * FROM form_encounter WHERE pid = :pid ORDER BY id"),
                # form_vitals is linked to its encounter through `forms` (not read here)
                vitals=rows("SELECT * FROM form_vitals WHERE pid = :pid ORDER BY id"),
                problems=[r for r in lists if r.get("type") == "medical_problem"],
                allergies=[r for r in lists if r.get("type") == "allergy"],
                medications=[r for r in lists if r.get("type") == "medication"],
                prescriptions=rows(
                    "SELECT * FROM prescriptions WHERE patient_id = :pid ORDER BY id"
                ),
            )


def _read_only(dbapi_connection: Any, _record: Any) -> None:
    """Every session is read-only: the bridge never writes to OpenEMR's database."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()
