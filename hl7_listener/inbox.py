"""Durable inbox: every HL7 message is committed here before any positive ACK."""

from __future__ import annotations

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
    update,
)

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


class Inbox:
    """Small repository over hl7_messages; each call is its own committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def store(self, raw: bytes, sender: str, control_id: str, mtype: str, version: str) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(hl7_messages).values(
                    raw=raw,
                    sender=sender[:255],
                    control_id=control_id[:199],
                    message_type=mtype[:32],
                    version=version[:16],
                    received_at=int(time.time() * 1_000_000),
                    status="received",
                )  # fmt: skip
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def find_original(self, sender: str, control_id: str) -> InboxRow | None:
        """An earlier message with the same MSH-3+MSH-4+MSH-10 that already has an ACK."""
        q = (
            select(hl7_messages)
            .where(hl7_messages.c.sender == sender[:255])
            .where(hl7_messages.c.control_id == control_id[:199])
            .where(hl7_messages.c.status.in_(("received", "processed", "failed")))
            .where(hl7_messages.c.ack.is_not(None))
            .order_by(hl7_messages.c.pk)
            .limit(1)
        )
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        return _row(r) if r else None

    def finish(
        self, pk: int, status: str, ack: bytes | None, error: str | None = None,
        resources: list[str] | None = None,
    ) -> None:  # fmt: skip
        values: dict[str, Any] = {"status": status, "error": error}
        if ack is not None:
            values["ack"] = ack
        if resources is not None:
            values["resources"] = " ".join(resources)
        with self.engine.begin() as conn:
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
