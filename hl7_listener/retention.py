"""Retention of the HL7 inbox: processed (and duplicate) messages are deleted after
INTEROP_HL7_RETENTION_DAYS, failed ones after INTEROP_HL7_FAILED_RETENTION_DAYS (0: kept until
someone looks at them). Messages not yet mapped ('received') are never pruned.

Deletes go in batches of ids, oldest first, so no transaction holds the inbox for long while
MLLP senders are writing; the full-text index follows by itself (triggers, migration 0014).
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, delete, select

from fhir_server.store.db import write_transaction
from hl7_listener.inbox import hl7_messages

DAY_US = 86_400 * 1_000_000
BATCH = 2_000
M = hl7_messages.c


def prune(
    engine: Engine, processed_days: int, failed_days: int, now: float | None = None,
    max_batches: int = 500,
) -> int:  # fmt: skip
    """Delete what is older than the retention; returns how many messages went."""
    now_us = int((time.time() if now is None else now) * 1_000_000)
    rules: list[tuple[tuple[str, ...], int]] = []
    if processed_days > 0:
        rules.append((("processed", "duplicate"), now_us - processed_days * DAY_US))
    if failed_days > 0:
        rules.append((("failed",), now_us - failed_days * DAY_US))
    removed = 0
    for statuses, cutoff in rules:
        for status in statuses:  # one index range per status: (status, received_at)
            for _ in range(max_batches):
                with engine.connect() as conn:
                    ids = list(
                        conn.execute(
                            select(M.pk)
                            .where(M.status == status, M.received_at < cutoff)
                            .order_by(M.received_at)
                            .limit(BATCH)
                        ).scalars()
                    )
                if not ids:
                    break
                with write_transaction(engine) as conn:
                    conn.execute(
                        delete(hl7_messages).where(
                            M.pk.in_(ids), M.status == status, M.received_at < cutoff
                        )
                    )
                removed += len(ids)
    return removed
