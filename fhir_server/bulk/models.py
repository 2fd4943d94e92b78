"""The bulk job table: one row per `$export` / `$import`, shared by the API and the workers.

The row is the only channel between them: the API creates it and sets `cancel`; the job
updates `status`, `progress` and, at the end, `result` (the manifest as JSON). Files live on
disk under the configured directory, named by `job_id`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, String, Table, Text

from fhir_server.store.models import PrimaryKey, metadata

bulk_jobs = Table(
    "bulk_jobs",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, unique=True, doc="random, in the status URL"),
    Column("kind", String(16), nullable=False, doc="export or import"),
    Column("owner", String(255), nullable=False, doc="client id that asked; '' with auth off"),
    Column("status", String(16), nullable=False, doc="accepted|running|completed|failed"),
    Column("request", Text, nullable=False, doc="the kick-off request URL"),
    Column("params", Text, nullable=False, doc="the parsed kick-off parameters, JSON"),
    Column("created", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("transaction_time", BigInteger, nullable=False),
    Column("progress", String(255), nullable=False, default=""),
    Column("heartbeat", BigInteger, nullable=False, doc="last sign of life of its runner"),
    Column("cancel", Boolean, nullable=False, default=False),
    Column("result", Text, nullable=True, doc="manifest JSON, or the failure text"),
    Column("expires", BigInteger, nullable=True, doc="when files and row are removed"),
    Column("lease_owner", String(128), nullable=True, doc="the process running it"),
    Column("lease_until", BigInteger, nullable=True, doc="its lease end (work.WorkQueue)"),
    Index("ix_bulk_jobs_expires", "expires"),
)
