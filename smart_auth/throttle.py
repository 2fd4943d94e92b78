"""Counters that slow down guessing and flooding, kept in the database so every replica sees them.

Two shapes share one table (`auth_throttle`, one row per key):

- a *backoff* counts failures (wrong passwords, per user name and per client address); after
  `free` failures in a row each new failure locks the key for a window that doubles, up to
  `longest` seconds. A locked key is refused without looking at the password, and refusals do
  not extend the lock. Failures are forgotten after a quiet hour (or twice `longest`).
- a *rate* admits at most `limit` requests per key in a fixed window (registrations per address
  and in total).

Nothing here sleeps: a refusal says how many seconds to wait (HTTP Retry-After).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhir_server.store.db import write_transaction
from smart_auth.models import throttle


@dataclass(frozen=True, slots=True)
class Backoff:
    free: int = 5  # failures before the first lockout
    first: int = 5  # seconds of the first lockout; each further failure doubles it
    longest: int = 900

    def lock_for(self, failures: int) -> int:
        if failures < self.free:
            return 0
        return min(self.longest, self.first * 2 ** min(failures - self.free, 32))

    @property
    def forget_after(self) -> int:
        return max(3600, 2 * self.longest)


class Throttle:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def locked(self, keys: Sequence[str]) -> int:
        """Seconds until none of `keys` is locked (0: go ahead)."""
        now = time.time()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(throttle.c.until).where(throttle.c.key.in_([k[:200] for k in keys]))
            ).all()
        return max((math.ceil(until - now) for (until,) in rows if until > now), default=0)

    def failed(self, rules: Sequence[tuple[str, Backoff]]) -> int:
        """Count one failure against each key; returns how long the keys are now locked."""
        now = int(time.time())
        wait = 0
        with write_transaction(self.engine) as conn:
            for key, backoff in rules:
                row = _row(conn, key[:200], now)
                count = 0 if now - row.since > backoff.forget_after else row.count
                count += 1
                lock = backoff.lock_for(count)
                until = now + lock if lock else row.until
                conn.execute(
                    update(throttle)
                    .where(throttle.c.key == key[:200])
                    .values(count=count, since=now, until=until)
                )
                wait = max(wait, until - now)
        return wait

    def reset(self, key: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(throttle).where(throttle.c.key == key[:200]))

    def take(self, limits: Sequence[tuple[str, int]], window: int) -> int:
        """Admit one request under every (key, limit-per-window); 0 if admitted (and counted),
        else the seconds until the fullest window opens again (nothing is counted then)."""
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            rows = {key[:200]: _row(conn, key[:200], now) for key, _ in limits}
            counts: dict[str, tuple[int, int]] = {}
            wait = 0
            for key, limit in limits:
                row = rows[key[:200]]
                since, count = (now, 0) if now - row.since >= window else (row.since, row.count)
                counts[key[:200]] = (since, count)
                if count >= limit:
                    wait = max(wait, since + window - now)
            if wait:
                return max(wait, 1)
            for key, (since, count) in counts.items():
                conn.execute(
                    update(throttle)
                    .where(throttle.c.key == key)
                    .values(count=count + 1, since=since, until=0)
                )
        return 0


def _row(conn: Connection, key: str, now: int) -> Any:
    """The key's row, locked for this transaction; created (empty) on first use."""
    query = select(throttle).where(throttle.c.key == key).with_for_update()
    row = conn.execute(query).first()
    if row is None:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            insert(throttle)
            .values(key=key, count=0, since=now, until=0)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = conn.execute(query).one()
    return row
