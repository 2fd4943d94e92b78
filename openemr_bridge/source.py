"""Where OpenEMR rows come from: its REST API (normal) or its MariaDB (fast initial loads).

Both give the same row shapes (`patient_data`, `form_encounter`, `form_vitals`, `lists`,
`prescriptions` columns), so the pure mappers never know which one they read.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from mappers.openemr import PatientRecord
from openemr_bridge.client import OpenEmrClient

Row = dict[str, Any]
CACHE_SECONDS = 60.0


class Source(Protocol):
    def patients(self, limit: int, offset: int) -> list[Row]:
        """A page of patient rows in a stable order (pid)."""

    def patient(self, key: str) -> Row | None:
        """One patient by OpenEMR uuid (or `pid:N`)."""

    def record(self, patient: Row) -> PatientRecord:
        """The patient and every clinical row the bridge maps."""

    def total(self) -> int | None:
        """How many patients there are, when the source can tell cheaply (for a progress bar)."""


class ApiSource:
    """The Standard REST API, with the service user's token."""

    def __init__(self, client: OpenEmrClient) -> None:
        self.client = client
        self._prescriptions: dict[str, list[Row]] | None = None
        self._fetched = 0.0

    def patients(self, limit: int, offset: int) -> list[Row]:
        return self.client.patients(limit=limit, offset=offset, _sort="pid")

    def total(self) -> int | None:
        return None  # OpenEMR's patient search gives no total

    def patient(self, key: str) -> Row | None:
        if key.startswith("pid:"):
            rows = [r for r in self.client.patients(limit=100000) if str(r.get("pid")) == key[4:]]
            return rows[0] if rows else None
        return self.client.patient(key)

    def record(self, patient: Row) -> PatientRecord:
        puuid, pid = str(patient.get("uuid") or ""), str(patient.get("pid") or "")
        encounters = self.client.encounters(puuid) if puuid else []
        vitals: list[Row] = []
        for enc in encounters:
            eid = str(enc.get("encounter") or enc.get("eid") or "")
            if eid and pid:
                vitals.extend(v | {"eid": eid} for v in self.client.vitals(pid, eid))
        return PatientRecord(
            patient=patient,
            encounters=encounters,
            vitals=vitals,
            problems=self.client.medical_problems(puuid) if puuid else [],
            allergies=self.client.allergies(puuid) if puuid else [],
            medications=self.client.medications(pid) if pid else [],
            prescriptions=self._prescriptions_of(pid, puuid),
        )

    def _prescriptions_of(self, pid: str, puuid: str) -> list[Row]:
        """/api/prescription has no patient filter: fetch the list once a minute (a run of the
        sync reads it once, not per patient) and group it by patient."""
        if self._prescriptions is None or time.monotonic() - self._fetched > CACHE_SECONDS:
            grouped: dict[str, list[Row]] = {}
            for row in self.client.prescriptions():
                for key in (row.get("patient_id"), row.get("pid"), row.get("puuid")):
                    if key not in (None, ""):
                        grouped.setdefault(str(key), []).append(row)
            self._prescriptions = grouped
            self._fetched = time.monotonic()
        seen: dict[int, Row] = {}
        for key in (pid, puuid):
            for row in self._prescriptions.get(key, []) if key else []:
                seen[id(row)] = row
        return list(seen.values())
