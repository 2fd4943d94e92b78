"""What the bridge remembers between runs: feed cursors and the studies it has synced.

The cursor is committed only after the changes before it were applied, so a crash replays a
few changes (harmless: applying a study again is a no-op) and never skips one. The study rows
give deletion callbacks (Orthanc ids only) and reconciliation something to look up, and the
digest of the last applied Bundle makes a repeated sync write nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)

from fhir_server.store.db import write_transaction
from fhir_server.store.models import metadata

imaging_cursors = Table(
    "imaging_cursors",
    metadata,
    Column("name", String(64), primary_key=True, doc="orthanc-changes, qido-poll, ..."),
    Column("value", String(255), nullable=False),
    Column("updated_at", BigInteger, nullable=False, doc="UTC epoch seconds"),
)

imaging_studies = Table(
    "imaging_studies",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("orthanc_id", String(64), nullable=True, doc="Orthanc's id, for deletion callbacks"),
    Column("resource_id", String(64), nullable=False, doc="ImagingStudy id"),
    Column("digest", String(64), nullable=False, doc="sha256 of the last applied Bundle"),
    Column("instances", Integer, nullable=False),
    Column("synced_at", BigInteger, nullable=False),
    Index("ix_imaging_studies_orthanc_id", "orthanc_id"),
)


@dataclass(frozen=True)
class SyncedStudy:
    study_uid: str
    orthanc_id: str | None
    resource_id: str
    digest: str
    instances: int


class BridgeState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(imaging_cursors.c.value).where(imaging_cursors.c.name == name)
            ).scalar_one_or_none()

    def set_cursor(self, name: str, value: str) -> None:
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(imaging_cursors)
                .where(imaging_cursors.c.name == name)
                .values(value=value, updated_at=now)
            )
            if done.rowcount == 0:
                conn.execute(insert(imaging_cursors).values(name=name, value=value, updated_at=now))

    def study(self, study_uid: str) -> SyncedStudy | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(imaging_studies).where(imaging_studies.c.study_uid == study_uid)
            ).first()
        return SyncedStudy(row[0], row[1], row[2], row[3], row[4]) if row else None

    def by_orthanc_id(self, orthanc_id: str) -> SyncedStudy | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(imaging_studies).where(imaging_studies.c.orthanc_id == orthanc_id)
            ).first()
        return SyncedStudy(row[0], row[1], row[2], row[3], row[4]) if row else None

    def all_uids(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(imaging_studies.c.study_uid)).scalars())

    def record(self, s: SyncedStudy) -> None:
        values = {"orthanc_id": s.orthanc_id, "resource_id": s.resource_id, "digest": s.digest,
                  "instances": s.instances, "synced_at": int(time.time())}  # fmt: skip
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(imaging_studies)
                .where(imaging_studies.c.study_uid == s.study_uid)
                .values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(imaging_studies).values(study_uid=s.study_uid, **values))

    def forget(self, study_uid: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(imaging_studies).where(imaging_studies.c.study_uid == study_uid))
