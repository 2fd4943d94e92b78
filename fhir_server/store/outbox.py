"""Reading the outbox: each consumer (AI trigger, OpenEMR push, subscriptions) sees every
committed change at least once, independently of the others, across restarts.

Why not a single cursor: on PostgreSQL outbox keys come from a sequence, and concurrent
transactions commit out of key order, so "everything above N" would skip a row committed
late. A consumer therefore keeps a *floor* (every change at or below it is done) plus the
keys it has finished above the floor; the floor only moves past changes older than
`SETTLE_US`, by when any transaction that wrote them has long committed or rolled back.

A consumer is drained by one process of the deployment at a time: the holder of its lease
`outbox:{name}` (fhir_server.store.work), which reads what is pending only once it holds the
lease, and keeps it while alive. Another process takes over when the holder dies (SIGKILL)
and its lease runs out: the changes it had not marked done are handed over again (at least
once), and without a crash none is handed over twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    String,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Exists

from fhir_server.clock import now_us
from fhir_server.store.db import write_transaction
from fhir_server.store.models import PrimaryKey, metadata, outbox
from fhir_server.store.work import Lease, Leases

SETTLE_US = 300 * 1_000_000  # no write transaction stays open this long (5 minutes)
LEASE_SECONDS = 30.0

outbox_consumers = Table(
    "outbox_consumers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("floor", BigInteger, nullable=False, doc="every outbox pk <= floor is done"),
)

outbox_done = Table(
    "outbox_done",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("outbox_pk", PrimaryKey, primary_key=True, autoincrement=False),
)


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the outbox recorded it."""

    pk: int
    res_type: str
    res_id: str
    version_id: int
    interaction: str  # create, update, patch or delete
    created: int  # UTC epoch microseconds

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"


class Outbox:
    """Per-consumer reading of the outbox table."""

    def __init__(self, engine: Engine, lease_seconds: float = LEASE_SECONDS) -> None:
        self.engine = engine
        self.leases = Leases(engine)  # this process, as a lease holder
        self.lease_seconds = lease_seconds

    def claim(self, consumer: str) -> bool:
        """Take (or renew) the consumer's lease; False while another process holds it."""
        self.ensure(consumer)
        return self.leases.acquire(f"outbox:{consumer}", self.lease_seconds)

    def lease(self, consumer: str) -> Lease:
        """The consumer's lease as this process keeps it (renewed lazily while it drains)."""
        self.ensure(consumer)
        return Lease(self.leases, f"outbox:{consumer}", self.lease_seconds)

    def ensure(self, consumer: str) -> None:
        """The consumer's progress row (its floor starts at 0)."""
        with self.engine.connect() as conn:
            if conn.execute(
                select(outbox_consumers.c.name).where(outbox_consumers.c.name == consumer)
            ).first():
                return
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(insert(outbox_consumers).values(name=consumer, floor=0))
        except IntegrityError:  # another process registered it first
            pass

    def release(self, consumer: str) -> None:
        self.leases.release(f"outbox:{consumer}")

    def pending(
        self, consumer: str, limit: int = 100, types: Collection[str] | None = None
    ) -> list[Change]:
        """Changes this consumer has not finished, oldest first."""
        floor = (
            select(outbox_consumers.c.floor)
            .where(outbox_consumers.c.name == consumer)
            .scalar_subquery()
        )
        query = (
            select(
                outbox.c.pk,
                outbox.c.res_type,
                outbox.c.res_id,
                outbox.c.version_id,
                outbox.c.interaction,
                outbox.c.created,
            )
            .where(outbox.c.pk > func.coalesce(floor, 0), ~self._done(consumer))
            .order_by(outbox.c.pk)
            .limit(limit)
        )
        if types:
            query = query.where(outbox.c.res_type.in_(sorted(types)))
        with self.engine.connect() as conn:
            return [Change(*row) for row in conn.execute(query)]

    def done(self, consumer: str, changes: Iterable[Change]) -> None:
        rows = [{"consumer": consumer, "outbox_pk": c.pk} for c in changes]
        if rows:
            with write_transaction(self.engine) as conn:
                conn.execute(insert(outbox_done), rows)

    def settle(self, consumer: str, types: Collection[str] | None = None) -> int:
        """Move the floor past settled, finished changes and forget their done-marks."""
        with write_transaction(self.engine) as conn:
            floor = conn.execute(
                select(outbox_consumers.c.floor).where(outbox_consumers.c.name == consumer)
            ).scalar_one_or_none()
            if floor is None:
                return 0
            settled = conn.execute(
                select(func.max(outbox.c.pk)).where(
                    outbox.c.pk > floor, outbox.c.created < now_us() - SETTLE_US
                )
            ).scalar()
            if settled is None:
                return int(floor)
            unfinished = select(func.min(outbox.c.pk)).where(
                outbox.c.pk > floor, outbox.c.pk <= settled, ~self._done(consumer)
            )
            if types:
                unfinished = unfinished.where(outbox.c.res_type.in_(sorted(types)))
            first = conn.execute(unfinished).scalar()
            new_floor = settled if first is None else first - 1
            if new_floor > floor:
                conn.execute(
                    update(outbox_consumers)
                    .where(outbox_consumers.c.name == consumer)
                    .values(floor=new_floor)
                )
                conn.execute(
                    delete(outbox_done).where(
                        outbox_done.c.consumer == consumer, outbox_done.c.outbox_pk <= new_floor
                    )
                )
            return int(max(new_floor, floor))

    @staticmethod
    def _done(consumer: str) -> Exists:
        return exists().where(
            and_(outbox_done.c.consumer == consumer, outbox_done.c.outbox_pk == outbox.c.pk)
        )
