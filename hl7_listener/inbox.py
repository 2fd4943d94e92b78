"""Durable inbox: every HL7 message is committed here before any positive ACK."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    insert,
    select,
    tuple_,
    update,
)

from fhir_server.store.db import write_transaction
from fhir_server.store.models import PrimaryKey, metadata

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("raw", LargeBinary, nullable=False, doc="bytes exactly as received"),
    Column("sender", String(255), nullable=False, doc="MSH-3^MSH-4"),
    Column("control_id", String(199), nullable=False, doc="MSH-10"),
    Column("message_type", String(32), nullable=False),
    Column("version", String(16), nullable=False),
    Column("received_at", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("status", String(16), nullable=False, doc="received|processed|failed|duplicate"),
    Column("error", Text, nullable=True),
    Column("ack", LargeBinary, nullable=True, doc="the ACK sent, replayed for duplicates"),
    Column("resources", Text, nullable=True, doc="space-separated Type/id produced"),
    Index("ix_hl7_messages_sender_control", "sender", "control_id"),
    Index("ix_hl7_messages_status_received", "status", "received_at"),
)


@dataclass
class InboxRow:
    pk: int
    raw: bytes
    sender: str
    control_id: str
    message_type: str
    version: str
    received_at: int
    status: str
    error: str | None
    ack: bytes | None
    resources: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "sender": self.sender,
            "controlId": self.control_id,
            "type": self.message_type,
            "version": self.version,
            "receivedAt": self.received_at,
            "status": self.status,
            "error": self.error,
            "resources": self.resources,
        }


def parse_time(text: str) -> int:
    """An ISO date or date-time (no offset = UTC) -> epoch microseconds; ValueError if not."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000)


def _row(r: Any) -> InboxRow:
    return InboxRow(
        r.pk, r.raw, r.sender, r.control_id, r.message_type, r.version, r.received_at,
        r.status, r.error, r.ack, (r.resources or "").split(),
    )  # fmt: skip


@dataclass
class Arrival:
    """A message to store, with the status and ACK it gets unless it is a duplicate."""

    raw: bytes
    sender: str
    control_id: str
    message_type: str = ""
    version: str = ""
    status: str = "received"
    ack: bytes | None = None
    error: str | None = None
    # set by the store:
    pk: int | None = None
    original: InboxRow | None = None  # an earlier message with this sender + control id
    failure: BaseException | None = None


class Inbox:
    """Small repository over hl7_messages.

    Storing uses group commit: messages arriving while a commit is in progress are written
    together in the next transaction, so eight senders cost one commit, not eight, and each
    message is still committed before its ACK goes out.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._queue: list[Arrival] = []
        self._writing = False

    def store(self, arrival: Arrival) -> Arrival:
        """Commit the message (durable when this returns). An earlier original (same
        MSH-3+MSH-4+MSH-10, with an ACK) makes it a duplicate, stored with that ACK.
        Raises if the database cannot take it."""
        with self._cond:
            self._queue.append(arrival)
            while arrival.pk is None and arrival.failure is None:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    self._write(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        if arrival.failure is not None:
            raise arrival.failure
        return arrival

    def _write(self, batch: list[Arrival]) -> None:
        try:
            with write_transaction(self.engine) as conn:  # reads, then writes
                originals = _originals(conn, batch)
                for a in batch:
                    key = (a.sender[:255], a.control_id[:199])
                    if a.control_id and key in originals:
                        a.original = originals[key]
                        a.status, a.ack = "duplicate", a.original.ack
                        a.error = f"duplicate of {a.original.pk}"
                rows = [
                    {
                        "raw": a.raw,
                        "sender": a.sender[:255],
                        "control_id": a.control_id[:199],
                        "message_type": a.message_type[:32],
                        "version": a.version[:16],
                        "received_at": int(time.time() * 1_000_000),
                        "status": a.status,
                        "ack": a.ack,
                        "error": a.error,
                    }
                    for a in batch
                ]
                stmt = insert(hl7_messages).returning(
                    hl7_messages.c.pk, sort_by_parameter_order=True
                )
                pks = [r[0] for r in conn.execute(stmt, rows)]
        except Exception as exc:  # every waiter learns its message was not stored
            for a in batch:
                a.failure = exc
            return
        for a, pk in zip(batch, pks, strict=True):
            a.pk = int(pk)

    def finish(
        self, pk: int, status: str, ack: bytes | None, error: str | None = None,
        resources: list[str] | None = None,
    ) -> None:  # fmt: skip
        values: dict[str, Any] = {"status": status, "error": error}
        if ack is not None:
            values["ack"] = ack
        if resources is not None:
            values["resources"] = " ".join(resources)
        with write_transaction(self.engine) as conn:
            conn.execute(update(hl7_messages).where(hl7_messages.c.pk == pk).values(**values))

    def get(self, pk: int) -> InboxRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(hl7_messages).where(hl7_messages.c.pk == pk)).first()
        return _row(r) if r else None

    def list(
        self, status: str | None = None, mtype: str | None = None, sender: str | None = None,
        limit: int = 50, offset: int = 0, since: int | None = None, until: int | None = None,
    ) -> list[InboxRow]:  # fmt: skip
        """Newest first; since/until bound the received time (epoch microseconds, until
        exclusive)."""
        q = select(hl7_messages).order_by(hl7_messages.c.pk.desc()).limit(limit).offset(offset)
        if since is not None:
            q = q.where(hl7_messages.c.received_at >= since)
        if until is not None:
            q = q.where(hl7_messages.c.received_at < until)
        if status:
            q = q.where(hl7_messages.c.status == status)
        if mtype:
            q = q.where(hl7_messages.c.message_type == mtype)
        if sender:
            q = q.where(hl7_messages.c.sender == sender)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]


def _originals(conn: Any, batch: list[Arrival]) -> dict[tuple[str, str], InboxRow]:
    """Earlier messages with an ACK for the batch's sender + control id keys."""
    keys = {(a.sender[:255], a.control_id[:199]) for a in batch if a.control_id}
    found: dict[tuple[str, str], InboxRow] = {}
    if keys:
        q = (
            select(hl7_messages)
            .where(tuple_(hl7_messages.c.sender, hl7_messages.c.control_id).in_(keys))
            .where(hl7_messages.c.status.in_(("received", "processed", "failed")))
            .where(hl7_messages.c.ack.is_not(None))
            .order_by(hl7_messages.c.pk.desc())
        )
        for r in conn.execute(q):
            found[(r.sender, r.control_id)] = _row(r)  # descending: the oldest wins
    return found
