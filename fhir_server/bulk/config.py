"""What the bulk jobs need to know from the operator (built from `INTEROP_BULK_*` settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from outbound import MB, Policy


@dataclass(frozen=True, slots=True)
class BulkConfig:
    directory: Path  # export files and uploaded import files, one folder per job
    max_file_bytes: int = 256 * 1024 * 1024  # an NDJSON file is closed and a new one begun
    retention_seconds: int = 86_400  # a finished job's files are removed this long after
    workers: int = 2  # jobs running at once in the in-process runner
    import_batch: int = 500  # resources per transaction during $import
    retry_after: int = 2  # seconds a client is asked to wait between status polls
    # where $import may fetch sources from, how long and how much (INTEROP_OUTBOUND_*)
    sources: Policy = field(
        default_factory=lambda: Policy(
            "$import", read_timeout=60.0, deadline=3600.0, max_bytes=1024 * MB, max_redirects=3
        )  # fmt: skip
    )
