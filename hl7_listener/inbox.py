"""Durable inbox: every HL7 message is committed here before any positive ACK."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
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
    select,
    update,
)

from fhir_server.store.db import write_transaction
from fhir_server.store.models import PrimaryKey, metadata
from fhir_server.store.work import WorkQueue, process_id
from mappers.hl7v2.parser import Message, ParseError, parse

log = logging.getLogger("interop.hl7")

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
    Column("content_hash", String(64), nullable=True, doc="sha256 of the message but MSH-7"),
    Column("flags", String(255), nullable=True, doc="space-separated: control-id-reuse, ..."),
    Column("warning", Text, nullable=True, doc="applied, but something was left out: why"),
    Column("patient_ids", Text, nullable=True, doc='PID-2/PID-3 values: " id1 id2 "'),
    Column("lease_owner", String(128), nullable=True, doc="the process mapping it"),
    Column("lease_until", BigInteger, nullable=True, doc="its lease end (work.WorkQueue)"),
    Index("ix_hl7_messages_sender_control", "sender", "control_id"),
    Index("ix_hl7_messages_status_received", "status", "received_at"),
    Index("ix_hl7_messages_content_hash", "content_hash"),
    # the console's message search (migration 0014; plus a full-text index of `raw`)
    Index("ix_hl7_messages_received", "received_at"),
    Index("ix_hl7_messages_control", "control_id", "pk"),
    Index("ix_hl7_messages_type_pk", "message_type", "pk"),
    Index("ix_hl7_messages_status_pk", "status", "pk"),
    Index("ix_hl7_messages_sender_pk", "sender", "pk"),
)

CONTROL_ID_REUSE = "control-id-reuse"
# unmapped messages are work: the storing process holds each under a lease while it maps it
UNMAPPED = WorkQueue(hl7_messages, "pk", "lease_owner", "lease_until")


def patient_ids(raw: bytes) -> str | None:
    """The patient identifiers a message names (PID-2 and PID-3, the first component of each
    repetition), as " id1 id2 " so that a search can test one with LIKE '% id %'."""
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return None
    fs, comp, rep = raw[3:4], raw[4:5], raw[5:6]
    found: list[str] = []
    for segment in _SEGMENTS.split(raw):
        if segment[:3] == b"PID":
            for value in segment.split(fs)[2:4]:
                for repetition in value.split(rep):
                    ident = repetition.split(comp)[0].strip().replace(b" ", b"_")
                    if ident:
                        found.append(ident.decode("utf-8", "replace").replace("\x00", ""))
    found = list(dict.fromkeys(found))
    return (" " + " ".join(found) + " ")[:1000] if found else None


_SEGMENTS = re.compile(rb"[\r\n]+")


def content_hash(msg: Message | bytes) -> str:
    """What makes two messages the same message: every segment, except MSH-7 (the time a
    resend may refresh); segment separators (CR, LF, CRLF) do not count. Bytes that do not
    parse hash as they are."""
    if isinstance(msg, bytes):
        raw = msg
        try:
            msg = parse(raw)
        except (ParseError, IndexError):
            return hashlib.sha256(raw).hexdigest()
    fs = msg.delims.field
    lines = list(msg.lines)  # a segment's fields joined again are its line: only MSH changes
    for i, line in enumerate(lines):
        if line.startswith("MSH"):
            parts = line.split(fs)
            # as the fields read (MSH-1 is the separator itself): fields[n] == parts[n - 1]
            fields = ["MSH", fs, *parts[1:]]
            if len(fields) > 7:
                fields[7] = ""
            lines[i] = fs.join(fields)
    return hashlib.sha256("\r".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


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
    content_hash: str | None = None
    flags: list[str] = field(default_factory=list)
    warning: str | None = None

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
            "flags": self.flags,
            "warning": self.warning,
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
        r.status, r.error, r.ack, (r.resources or "").split(), r.content_hash,
        (r.flags or "").split(), r.warning,
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
    content_hash: str = ""
    # called right after the commit, in arrival (pk) order, for a message that is no
    # duplicate: where mapping is scheduled, so one patient's messages keep their order
    on_stored: Callable[[Arrival], None] | None = None
    mapping: Any = None  # what on_stored scheduled (the processor's Future)
    # set by the store:
    pk: int | None = None
    original: InboxRow | None = None  # the same message (sender, control id, content) before
    flags: list[str] = field(default_factory=list)
    warning: str | None = None
    failure: BaseException | None = None


class Inbox:
    """Small repository over hl7_messages.

    Storing uses group commit: messages arriving while a commit is in progress are written
    together in the next transaction, so eight senders cost one commit, not eight, and each
    message is still committed before its ACK goes out.
    """

    def __init__(self, engine: Engine, lease_seconds: float = 120.0) -> None:
        self.engine = engine
        self.owner = process_id()
        self.lease_seconds = lease_seconds  # how long a stored message is ours to map
        self._cond = threading.Condition()
        self._queue: list[Arrival] = []
        self._writing = False

    def store(self, arrival: Arrival) -> Arrival:
        """Commit the message (durable when this returns). An earlier original (same
        MSH-3+MSH-4, MSH-10 and content but MSH-7, with an ACK) makes it a duplicate, stored
        with that ACK; the same MSH-10 with other content is a new message, flagged
        control-id-reuse. Raises if the database cannot take it."""
        return self.store_many([arrival])[0]

    def store_many(self, arrivals: list[Arrival]) -> list[Arrival]:
        """`store` for several messages at once: one transaction, in list order."""
        if not arrivals:
            return arrivals
        with self._cond:
            self._queue.extend(arrivals)  # together: they land in the same transaction
            last = arrivals[-1]
            while last.pk is None and last.failure is None:
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
        if last.failure is not None:
            raise last.failure
        return arrivals

    def _write(self, batch: list[Arrival]) -> None:
        try:
            pks: list[int] = []
            with write_transaction(self.engine) as conn:  # reads, then writes
                for part in _apart(batch):  # a resend in the same batch sees its original
                    earlier = _earlier(conn, part)
                    for a in part:
                        _classify(a, earlier)
                    pks += _insert(conn, part, self.owner, self.lease_seconds)
        except Exception as exc:  # every waiter learns its message was not stored
            for a in batch:
                a.failure = exc
            return
        for a, pk in zip(batch, pks, strict=True):
            a.pk = int(pk)
        for a in batch:  # in pk order: the order messages are mapped in, per patient
            if a.on_stored is not None and a.original is None:
                try:
                    a.on_stored(a)
                except Exception:  # noqa: BLE001 - left 'received': mapped by the next drain
                    log.exception("scheduling message %s failed", a.pk)

    def finish(
        self, pk: int, status: str, ack: bytes | None, error: str | None = None,
        resources: list[str] | None = None, warning: str | None = None, conn: Any = None,
    ) -> None:  # fmt: skip
        """Record the mapping outcome; with `conn`, inside that (the apply's) transaction."""
        values: dict[str, Any] = {"status": status, "error": error, "warning": warning}
        if ack is not None:
            values["ack"] = ack
        if resources is not None:
            values["resources"] = " ".join(resources)
        stmt = update(hl7_messages).where(hl7_messages.c.pk == pk).values(**values)
        if conn is not None:
            conn.execute(stmt)
            return
        with write_transaction(self.engine) as own:
            own.execute(stmt)

    def claim_unmapped(self, limit: int = 1000) -> list[int]:
        """Messages left `received` whose mapper is gone (its lease ran out), oldest first,
        now ours to map: one listener of the deployment takes each."""
        return UNMAPPED.claim(
            self.engine, self.owner, self.lease_seconds, [hl7_messages.c.status == "received"],
            limit, hl7_messages.c.pk,
        )  # fmt: skip

    def get(self, pk: int) -> InboxRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(hl7_messages).where(hl7_messages.c.pk == pk)).first()
        return _row(r) if r else None

    def list(
        self, status: str | None = None, mtype: str | None = None, sender: str | None = None,
        limit: int = 50, offset: int = 0, since: int | None = None, until: int | None = None,
        oldest_first: bool = False, flag: str | None = None,
    ) -> list[InboxRow]:  # fmt: skip
        """Newest first (or oldest first, the order to map them in); since/until bound the
        received time (epoch microseconds, until exclusive); flag picks flagged messages."""
        order = hl7_messages.c.pk.asc() if oldest_first else hl7_messages.c.pk.desc()
        q = select(hl7_messages).order_by(order).limit(limit).offset(offset)
        if flag:
            q = q.where(hl7_messages.c.flags.contains(flag))
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


# The group commit runs on the driver's cursor, inside the SQLAlchemy transaction (which
# still takes the write lock and returns the connection): per batch that is a third of the
# CPU of the same statements through SQLAlchemy Core, which the ACK path waits for.
_STORED = ("raw", "sender", "control_id", "message_type", "version", "received_at", "status",
           "ack", "error", "content_hash", "flags", "warning", "patient_ids", "lease_owner",
           "lease_until")  # fmt: skip
_READ = ("pk", "sender", "control_id", "message_type", "version", "received_at", "status",
         "error", "ack", "resources", "content_hash")  # fmt: skip


def _cursor(conn: Any) -> tuple[Any, str]:
    """The transaction's DBAPI cursor and its placeholder (sqlite3 ?, psycopg %s)."""
    return conn.connection.dbapi_connection.cursor(), "?" if conn.dialect.name == "sqlite" else "%s"


def _insert(conn: Any, part: list[Arrival], owner: str, lease: float) -> list[int]:
    """Insert the messages as classified; their primary keys, in order. A message still to
    be mapped here at once is leased to this process (its mapper) from the start; one left
    for the pending sweep is not leased."""
    now = int(time.time() * 1_000_000)
    until = now + int(lease * 1_000_000)
    rows = [
        (a.raw, a.sender[:255], a.control_id[:199], a.message_type[:32], a.version[:16], now,
         a.status, a.ack, a.error, a.content_hash or None, " ".join(a.flags) or None, a.warning,
         patient_ids(a.raw),
         *((owner, until) if a.status == "received" and a.on_stored else (None, None)))
        for a in part
    ]  # fmt: skip
    cur, p = _cursor(conn)
    sql = (
        f"INSERT INTO hl7_messages ({', '.join(_STORED)}) VALUES ({', '.join([p] * len(_STORED))})"
    )
    if conn.dialect.name == "sqlite":  # one row at a time is cheap in-process
        pks = []
        for row in rows:
            cur.execute(sql, row)
            pks.append(cur.lastrowid)
        return pks
    cur.executemany(sql + " RETURNING pk", rows, returning=True)  # one round trip, in order
    pks = []
    while True:
        pks.append(cur.fetchone()[0])
        if not cur.nextset():
            return pks


def _apart(batch: list[Arrival]) -> list[list[Arrival]]:
    """The batch in consecutive parts where no two messages share the key a duplicate is
    looked up by (sender + control id; content hash without one), so each part is
    classified after the parts before it are inserted, as if stored one after another."""
    parts: list[list[Arrival]] = []
    seen: set[tuple[str, str]] = set()
    for a in batch:
        key = (a.sender[:255], a.control_id[:199]) if a.control_id else ("", a.content_hash)
        if not parts or key in seen:
            parts.append([])
            seen = set()
        seen.add(key)
        parts[-1].append(a)
    return parts


def _earlier(conn: Any, batch: list[Arrival]) -> list[InboxRow]:
    """Stored messages (duplicates excluded) that share a batch message's sender and control
    id, or, for messages without a control id, its content hash; oldest first. Two lookups,
    each on its own index (one query OR-ing them lets the planner read the whole inbox)."""
    keyed = [a for a in batch if a.control_id]
    hashes = sorted({a.content_hash for a in batch if not a.control_id and a.content_hash})
    cur, p = _cursor(conn)
    select_ = f"SELECT {', '.join(_READ)} FROM hl7_messages WHERE "
    queries: list[tuple[str, list[str]]] = []
    if keyed:
        senders = sorted({a.sender[:255] for a in keyed})
        ids = sorted({a.control_id[:199] for a in keyed})
        where = f"sender IN ({', '.join([p] * len(senders))}) "
        where += f"AND control_id IN ({', '.join([p] * len(ids))})"
        queries.append((select_ + where, [*senders, *ids]))
    if hashes:
        queries.append((select_ + f"content_hash IN ({', '.join([p] * len(hashes))})", hashes))
    dbapi = conn.connection.dbapi_connection
    rows: dict[int, tuple[Any, ...]] = {}
    # PostgreSQL: the transaction's BEGIN and the lookups travel in one round trip
    with nullcontext() if conn.dialect.name == "sqlite" else dbapi.pipeline():
        cursors = [dbapi.cursor() for _ in queries]
        for c, (sql, params) in zip(cursors, queries, strict=True):
            c.execute(sql, params)
        for c in cursors:
            rows.update((r[0], r) for r in c.fetchall())
    found = []
    for pk in sorted(rows):
        _, sender, control_id, mtype, version, received, status, error, ack, _, chash = rows[pk]
        if status not in _ORIGINAL:
            continue
        row = InboxRow(pk, b"", sender, control_id, mtype, version, received, status, error,
                       None if ack is None else bytes(ack), [], chash)  # fmt: skip
        if row.content_hash is None:  # stored before hashes were kept
            cur.execute(f"SELECT raw FROM hl7_messages WHERE pk = {p}", (pk,))
            row.content_hash = content_hash(bytes(cur.fetchone()[0]))
        found.append(row)
    return found


_ORIGINAL = {"received", "processed", "failed"}  # not "duplicate"


def _classify(a: Arrival, earlier: list[InboxRow]) -> None:
    """Duplicate (same sender, control id and content: gets the original's ACK back), or a
    new message, flagged when it reuses another message's control id."""
    sender, control_id = a.sender[:255], a.control_id[:199]
    same_key = [r for r in earlier if r.sender == sender and r.control_id == control_id]
    for r in same_key:
        if r.content_hash == a.content_hash and r.ack is not None:
            a.original = r
            a.status, a.ack = "duplicate", r.ack
            a.error = f"duplicate of {r.pk}"
            return
    reused = [r.pk for r in same_key if r.content_hash != a.content_hash]
    if control_id and reused:
        a.flags.append(CONTROL_ID_REUSE)
        a.warning = (
            f"control id {control_id} reused: message {reused[0]} from this sender had "
            "other content; this one is processed as a new message"
        )
