"""OpenEMR -> canonical FHIR: page through patients, map each, apply through the write path.

Each OpenEMR patient (with its encounters, vitals, problems, allergies and medications) is one
transaction Bundle. A digest of the mapped resources is remembered per patient, so an unchanged
patient costs no write; `full` re-applies everything, and the repository still keeps unchanged
resources at their version. The page offset is remembered while a run is under way, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhir_server.errors import FhirError
from fhir_server.store.apply import EntryResult
from fhir_server.store.audit import Actor
from fhir_server.store.db import write_transaction
from fhir_server.store.repository import HasStore
from mappers.openemr import Systems, patient_to_fhir, to_bundle
from openemr_bridge import canonical
from openemr_bridge.errors import OpenEmrAuthError, OpenEmrError, OpenEmrUnavailable
from openemr_bridge.models import records, state
from openemr_bridge.source import Row, Source

log = logging.getLogger("interop.openemr")
PENDING_TAG = "urn:interop:openemr-pending"
OFFSET_KEY = "sync.offset"
LAST_RUN_KEY = "sync.last_completed"


@dataclass
class Summary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    expected: int | None = None  # patients in OpenEMR, when the source can tell
    reasons: dict[str, str] = field(default_factory=dict)  # patient key -> why it failed
    patients: dict[str, str] = field(default_factory=dict)  # patient key -> canonical id

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + self.failed

    def as_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "reasons": self.reasons,
        }


Progress = Callable[[Summary], None]


class Syncer:
    def __init__(
        self, ctx: HasStore, source: Source, systems: Systems, page_size: int = 100
    ) -> None:
        self.ctx = ctx
        self.engine: Engine = ctx.store.engine
        self.source = source
        self.systems = systems
        self.page_size = page_size
        # the audit trail's agent for every change a sync makes: this OpenEMR site
        self.actor = Actor.of_channel("openemr", systems.records)

    # -- runs -----------------------------------------------------------------------------------

    def run(self, full: bool = False, progress: Progress | None = None) -> Summary:
        """Every patient, page by page (`_limit`/`_offset`), resuming an interrupted run."""
        offset = 0 if full else int(self.get_state(OFFSET_KEY) or 0)
        total = self.source.total()
        summary = Summary(expected=None if total is None else max(total - offset, 0))
        while True:
            page = self.source.patients(self.page_size, offset)
            for row in page:
                self.sync_row(row, summary, full)
                if progress:
                    progress(summary)
            offset += len(page)
            self.set_state(OFFSET_KEY, str(offset))
            if len(page) < self.page_size:
                break
        self.set_state(OFFSET_KEY, "0")
        self.set_state(LAST_RUN_KEY, str(int(time.time())))
        return summary

    def sync_patient(self, key: str, full: bool = True) -> tuple[Summary, str | None]:
        """One patient by OpenEMR uuid (or `pid:N`); returns the canonical Patient id."""
        summary = Summary()
        row = self.source.patient(key)
        if row is None:
            summary.failed = 1
            summary.reasons[key] = "no such patient in OpenEMR"
            return summary, None
        self.sync_row(row, summary, full)
        return summary, summary.patients.get(source_key(row))

    # -- one patient ----------------------------------------------------------------------------

    def sync_row(self, row: Row, summary: Summary, full: bool = False) -> str:
        key = source_key(row)
        try:
            outcome, patient_id = self._sync(row, key, full)
        except (OpenEmrUnavailable, OpenEmrAuthError):
            raise  # OpenEMR is down or refuses us: stop; the remembered offset resumes the run
        except Exception as exc:  # one patient's failure is counted; the run goes on
            reason = _reason(exc)
            if isinstance(exc, OpenEmrError | FhirError | ValueError | KeyError):
                log.warning("OpenEMR patient %s not synced: %s", key, reason)
            else:
                log.exception("OpenEMR patient %s not synced", key)
            summary.add("failed")
            summary.reasons[key] = reason
            return "failed"
        summary.add(outcome)
        if patient_id:
            summary.patients[key] = patient_id
        return outcome

    def _sync(self, row: Row, key: str, full: bool) -> tuple[str, str | None]:
        record = self.source.record(row)
        mapped = patient_to_fhir(record.patient, self.systems)
        existing = self._existing(mapped)
        patient = merge_patient(existing, mapped, self.systems)
        bundle = to_bundle(record, self.systems, patient)
        digest = _digest(bundle)
        known = self._known(key)
        if known is not None and known["digest"] == digest and not full and existing is not None:
            self._touch(key)
            return "unchanged", known["patient_id"]
        results = self.ctx.store.apply(bundle, self.actor)
        versions = _versions(bundle, results)
        patient_id = results[0].res_id if results[0].res_type == "Patient" else None
        before: dict[str, int] = json.loads(known["versions"]) if known else {}
        if results[0].outcome == "created":
            outcome = "created"
        elif any(before.get(url) != version for url, version in versions.items()):
            outcome = "updated"
        else:
            outcome = "unchanged"
        self._remember(key, patient_id, digest, versions, known is not None)
        return outcome, patient_id

    def _existing(self, mapped: dict[str, Any]) -> dict[str, Any] | None:
        for system in (self.systems.uuid, self.systems.pid):
            value = canonical.identifier(mapped, system)
            if value:
                found = canonical.find_one(
                    self.ctx, "Patient", [("identifier", f"{system}|{value}")]
                )
                if found is not None:
                    return found
        return None

    # -- remembered state -----------------------------------------------------------------------

    def _known(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(records).where(records.c.source_key == key)).first()
        return dict(row._mapping) if row else None

    def _remember(
        self, key: str, patient_id: str | None, digest: str, versions: dict[str, int], known: bool
    ) -> None:
        values = {
            "patient_id": patient_id,
            "digest": digest,
            "versions": json.dumps(versions),
            "synced": int(time.time()),
        }
        if not known:
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(insert(records).values(source_key=key, **values))
                return
            except IntegrityError:  # a concurrent sync of the same patient got there first
                pass
        with write_transaction(self.engine) as conn:
            conn.execute(update(records).where(records.c.source_key == key).values(**values))

    def _touch(self, key: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(records).where(records.c.source_key == key).values(synced=int(time.time()))
            )

    def synced_at(self, patient_id: str) -> tuple[str, int] | None:
        """(source key, last sync time) of the OpenEMR patient behind a canonical Patient."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(records.c.source_key, records.c.synced).where(
                    records.c.patient_id == patient_id
                )
            ).first()
        return (row.source_key, row.synced) if row else None

    def get_state(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(state.c.value).where(state.c.name == name)).scalar()

    def set_state(self, name: str, value: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(state).where(state.c.name == name))
            conn.execute(insert(state).values(name=name, value=value))


def source_key(row: Row) -> str:
    uuid = str(row.get("uuid") or "")
    return uuid or f"pid:{row.get('pid')}"


def merge_patient(
    existing: dict[str, Any] | None, mapped: dict[str, Any], systems: Systems
) -> dict[str, Any]:
    """OpenEMR owns demographics; identifiers from other sources, links (merges) and tags that
    other channels put on the canonical Patient are kept, except a stale pending-push tag."""
    if existing is None:
        return mapped
    ours = {systems.pid, systems.uuid, systems.mrn}
    merged = dict(mapped)
    merged["identifier"] = list(mapped["identifier"]) + [
        i for i in existing.get("identifier") or [] if i.get("system") not in ours
    ]
    if existing.get("link"):
        merged["link"] = existing["link"]
    tags = [
        t for t in (existing.get("meta") or {}).get("tag") or [] if t.get("system") != PENDING_TAG
    ]
    if tags:
        merged["meta"] = {"tag": tags}
    return merged


def _digest(bundle: dict[str, Any]) -> str:
    """What was mapped, without the random `urn:uuid:` placeholders."""
    placeholders = {e["fullUrl"]: f"#{i}" for i, e in enumerate(bundle["entry"])}
    text = orjson.dumps([e["resource"] for e in bundle["entry"]], option=orjson.OPT_SORT_KEYS)
    decoded = text.decode()
    for full, short in placeholders.items():
        decoded = decoded.replace(full, short)
    return hashlib.sha256(decoded.encode()).hexdigest()


def _versions(bundle: dict[str, Any], results: list[EntryResult]) -> dict[str, int]:
    """The version each entry (by its request url) is at after the sync."""
    return {
        entry["request"]["url"]: result.version
        for entry, result in zip(bundle["entry"], results, strict=False)
        if result.version is not None
    }


def _reason(exc: Exception) -> str:
    if isinstance(exc, FhirError):
        return str(exc.outcome()["issue"][0].get("diagnostics") or exc)
    return str(exc) or type(exc).__name__
