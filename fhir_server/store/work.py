"""The one work machinery: rows claimed under a lease, and named leases for singletons.

Every durable queue of the server (AI jobs, Bulk Data jobs, the HL7 inbox's unmapped
messages, outbox consumers, Subscription deliveries) and every singleton (change feeds,
schedules, sweepers) coordinates through this module, the same way on both databases:

- `WorkQueue.claim` takes free rows (no lease, or one that has run out) and stamps them with
  an owner and a lease end in one statement. On PostgreSQL the candidates are picked with
  `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on, or take, each other's rows;
  on SQLite the claim runs in a write transaction (BEGIN IMMEDIATE: the single writer), so it
  is atomic too.
- A holder renews its lease while it works; a process killed mid-work stops renewing, and once
  the lease has run out any survivor claims the row: picked up again (at least once), never
  worked on by two live processes at once.
- `Leases` are named leases in the `leases` table: `acquire(name)` makes this process the
  holder of, say, "imaging-sync" or "outbox:subscriptions" until it stops renewing. That is
  the leader election of every singleton (interop.services.Singleton).

Times are UTC epoch microseconds (`fhir_server.clock.now_us`); a lease is only as good as the
clocks of the hosts agree, so keep them NTP-synchronised, as any lease scheme needs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from fhir_server.clock import now_us
from fhir_server.store.db import write_transaction
from fhir_server.store.models import metadata

log = logging.getLogger("interop.work")

leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True, doc="what is led: a singleton, a consumer"),
    Column("owner", String(128), nullable=True, doc="the holding process (None: free)"),
    Column("until", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("acquired", BigInteger, nullable=False, doc="when the holder took it over"),
)
L = leases.c


def process_id() -> str:
    """A name for this process that no other process, here or elsewhere, shares."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


@dataclass(frozen=True)
class WorkQueue:
    """A table whose rows are units of work, each claimable under a lease.

    `key` identifies a row, `owner` names its holder and `until` ends its lease (NULL: not
    held). A row is free when its lease is NULL or has run out; what else makes a row
    claimable (its status, its stage) is the caller's `where`.
    """

    table: Table
    key: str
    owner: str
    until: str

    def _col(self, name: str) -> Any:
        return self.table.c[name]

    def free(self, now: int) -> ColumnElement[bool]:
        until = self._col(self.until)
        return or_(until.is_(None), until < now)

    def claim(
        self,
        engine: Engine | Connection,
        owner: str,
        seconds: float,
        where: Sequence[ColumnElement[bool]] = (),
        limit: int = 1,
        order_by: Any = None,
        values: dict[str, Any] | None = None,
    ) -> list[Any]:
        """Claim up to `limit` free rows matching `where` (oldest `order_by` first) for
        `owner` for `seconds`, setting `values` on them too; returns their keys."""
        now = now_us()
        key = self._col(self.key)
        candidates = (
            select(key)
            .where(self.free(now), *where)
            .order_by(order_by if order_by is not None else key)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite: the single writer
        )
        stamp = {self.owner: owner, self.until: now + _us(seconds), **(values or {})}

        def run(conn: Connection) -> list[Any]:
            keys = list(conn.execute(candidates).scalars())
            if not keys:
                return []
            conn.execute(update(self.table).where(key.in_(keys), self.free(now)).values(**stamp))
            return keys

        if isinstance(engine, Connection):
            return run(engine)
        # look before taking the write lock: an idle poller then writes nothing
        with engine.connect() as conn:
            if conn.execute(select(key).where(self.free(now), *where).limit(1)).first() is None:
                return []
        with write_transaction(engine) as conn:
            return run(conn)

    def renew(
        self,
        engine: Engine,
        keys: Iterable[Any],
        owner: str,
        seconds: float,
        where: Sequence[ColumnElement[bool]] = (),
        **values: Any,
    ) -> bool:
        """Extend the lease on rows this owner holds (and that match `where`); False when it
        holds none of them any more (the lease ran out and another process took them: stop
        working on them)."""
        keys = list(keys)
        if not keys:
            return True
        with write_transaction(engine) as conn:
            done = conn.execute(
                update(self.table)
                .where(self._col(self.key).in_(keys), self._col(self.owner) == owner, *where)
                .values({self.until: now_us() + _us(seconds), **values})
            ).rowcount
        return bool(done)

    def release(
        self, engine: Engine | Connection, keys: Iterable[Any], owner: str | None, **values: Any
    ) -> int:
        """Give rows up (their lease ends now), setting `values`; with `owner`, only rows it
        still holds. Returns how many rows were released."""
        keys = list(keys)
        if not keys:
            return 0
        conditions = [self._col(self.key).in_(keys)]
        if owner is not None:
            conditions.append(self._col(self.owner) == owner)
        stmt = update(self.table).where(*conditions).values({self.until: None, **values})
        if isinstance(engine, Connection):
            return int(engine.execute(stmt).rowcount)
        with write_transaction(engine) as conn:
            return int(conn.execute(stmt).rowcount)

    def expired(self, engine: Engine, where: Sequence[ColumnElement[bool]] = ()) -> list[Any]:
        """Keys of rows matching `where` whose lease has run out (their holder is gone)."""
        until = self._col(self.until)
        with engine.connect() as conn:
            query = select(self._col(self.key)).where(until.is_not(None), until < now_us(), *where)
            return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class Holder:
    name: str
    owner: str | None
    until: int
    acquired: int


class Leases:
    """Named leases: one holder per name across every process on the database."""

    queue = WorkQueue(leases, "name", "owner", "until")

    def __init__(self, engine: Engine, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or process_id()

    def acquire(self, name: str, seconds: float) -> bool:
        """Become (or stay) the holder of `name` for `seconds`: True when this process holds
        it now. Reads first, so a process that is not the holder writes nothing while the
        holder is alive (idle standbys cost the single SQLite writer nothing)."""
        now = now_us()
        with self.engine.connect() as conn:
            row = conn.execute(select(L.owner, L.until).where(L.name == name)).first()
        if row is not None and row.owner not in (None, self.owner) and row.until >= now:
            return False
        if row is None:
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        insert(leases).values(
                            name=name, owner=self.owner, until=now + _us(seconds), acquired=now
                        )
                    )
                return True
            except IntegrityError:
                return self.acquire(name, seconds)  # another process created it first
        with write_transaction(self.engine) as conn:
            taken = conn.execute(
                update(leases)
                .where(L.name == name, or_(L.owner == self.owner, L.owner.is_(None), L.until < now))
                .values(
                    owner=self.owner,
                    until=now_us() + _us(seconds),
                    # a takeover starts a new term; a renewal keeps the old one
                    acquired=_case_acquired(self.owner, now),
                )
            ).rowcount
        return bool(taken)

    def holds(self, name: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(select(L.owner, L.until).where(L.name == name)).first()
        return row is not None and row.owner == self.owner and row.until >= now_us()

    def release(self, name: str) -> None:
        """Hand the lease back at once (an orderly stop: a survivor need not wait it out)."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(leases)
                .where(L.name == name, L.owner == self.owner)
                .values(owner=None, until=0)
            )

    def holder(self, name: str) -> Holder | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leases).where(L.name == name)).first()
        if row is None or row.owner is None or row.until < now_us():
            return None
        return Holder(row.name, row.owner, row.until, row.acquired)

    def all(self) -> list[Holder]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(leases).order_by(L.name)).all()
        return [Holder(r.name, r.owner, r.until, r.acquired) for r in rows]


def _case_acquired(owner: str, now: int) -> Any:
    from sqlalchemy import case

    return case((and_(L.owner == owner, L.until >= now), L.acquired), else_=now)


class Lease:
    """One named lease as a process sees it: `held()` says whether this process holds it,
    acquiring or renewing it in the database only when a third of it has passed (a holder
    writes every `seconds / 3`, a standby only reads)."""

    def __init__(self, leases: Leases, name: str, seconds: float) -> None:
        self.leases, self.name, self.seconds = leases, name, seconds
        self._valid_until = 0.0  # monotonic; conservative (taken before the renewal)
        self._renewed_at = float("-inf")
        self.error: str | None = None

    @property
    def leading(self) -> bool:
        """Held as of the last renewal, without asking the database."""
        return time.monotonic() < self._valid_until

    def held(self) -> bool:
        now = time.monotonic()
        if now < self._valid_until and now - self._renewed_at < self.seconds / 3:
            return True
        try:
            got = self.leases.acquire(self.name, self.seconds)
        except Exception as exc:  # noqa: BLE001 - the database is away: held until it runs out
            self.error = type(exc).__name__
            log.warning("lease %s: could not renew (%s)", self.name, self.error)
            return self.leading
        self.error = None
        if got:
            if not self.leading:
                log.info("lease %s: this process now leads", self.name)
            self._renewed_at, self._valid_until = now, now + self.seconds
        else:
            self._valid_until = 0.0
        return got

    def release(self) -> None:
        """Give it up at once (an orderly stop), so a survivor takes over without waiting."""
        if self._valid_until:
            self._valid_until = 0.0
            try:
                self.leases.release(self.name)
            except Exception:  # noqa: BLE001 - it simply runs out
                log.warning("lease %s: could not release", self.name)
