"""The message browser's queries over the HL7 inbox: search by every filter through an index
(full text: PostgreSQL `tsvector`/GIN, SQLite FTS5; both from migration 0014), the
segment/field tree of one message with the v2 field names, and exports.

Pages are keyset-paged (`before`: the smallest id shown), newest first: no OFFSET and no
COUNT over a million rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from sqlalchemy import Engine, column, func, literal_column, select, table, text, union_all

from hl7_listener.inbox import hl7_messages, parse_time

M = hl7_messages.c
LISTED = (M.pk, M.received_at, M.sender, M.message_type, M.control_id, M.status, M.error,
          M.resources, M.version)  # fmt: skip
STATUSES = ("received", "processed", "failed", "duplicate")
MAX_PAGE = 200
MAX_EXPORT = 10_000
_DELIMITERS = str.maketrans("|^~&\\", "     ")
_WORD = re.compile(r"\w+", re.UNICODE)


class QueryError(ValueError):
    """A filter the user must fix (shown on the page)."""


@dataclass
class MessageQuery:
    since: int | None = None  # epoch microseconds, inclusive
    until: int | None = None  # exclusive
    sender: str = ""
    message_type: str = ""  # "ADT" or "ADT^A01"
    status: str = ""
    control_id: str = ""
    patient: str = ""  # a PID-2/PID-3 identifier value
    text: str = ""  # words anywhere in the message
    before: int | None = None  # keyset: ids below this one
    ids: list[int] = field(default_factory=list)  # a chosen selection

    @classmethod
    def from_params(cls, params: dict[str, str], ids: list[str] | None = None) -> MessageQuery:
        def when(name: str) -> int | None:
            value = params.get(name, "").strip()
            if not value:
                return None
            try:
                return parse_time(value)
            except ValueError:
                raise QueryError(f"{name}: give an ISO date or date-time") from None

        status = params.get("status", "").strip()
        if status and status not in STATUSES:
            raise QueryError(f"status must be one of {', '.join(STATUSES)}")
        before = params.get("before", "").strip()
        try:
            chosen = [int(i) for i in ids or [] if i.strip()]
            before_id = int(before) if before else None
        except ValueError:
            raise QueryError("message ids are numbers") from None
        return cls(
            since=when("since"),
            until=when("until"),
            sender=params.get("sender", "").strip()[:255],
            message_type=params.get("type", "").strip().upper()[:32],
            status=status,
            control_id=params.get("control_id", "").strip()[:199],
            patient=params.get("patient", "").strip()[:199],
            text=params.get("q", "").strip()[:500],
            before=before_id,
            ids=chosen[:MAX_EXPORT],
        )

    def params(self) -> dict[str, str]:
        """The filters as the search form's parameters (links to the next page, exports)."""
        from datetime import UTC, datetime

        def iso(us: int | None) -> str:
            if us is None:
                return ""
            return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S")

        out = {
            "since": iso(self.since), "until": iso(self.until), "sender": self.sender,
            "type": self.message_type, "status": self.status, "control_id": self.control_id,
            "patient": self.patient, "q": self.text,
        }  # fmt: skip
        return {k: v for k, v in out.items() if v}


# Ids grow with the arrival time, except within transactions open at the same moment; none
# stays open this long (fhir_server.store.outbox.SETTLE_US), so an id bound found this much
# wider than the time bound loses no message.
SETTLE_US = 300 * 1_000_000


def _first_id_at(engine: Engine, when: int) -> int | None:
    """The id of the first message received at or after `when` (one index seek)."""
    with engine.connect() as conn:
        return conn.execute(
            select(M.pk).where(M.received_at >= when).order_by(M.received_at).limit(1)
        ).scalar()


def _conditions(engine: Engine, q: MessageQuery) -> list[Any]:
    where: list[Any] = []
    if q.ids:
        where.append(M.pk.in_(q.ids))
    # a time range is also an id range: pages walk the id index newest first, and the exact
    # time test keeps only the range's messages (no sort of a day's worth of messages)
    if q.since is not None:
        where.append(M.received_at >= q.since)
        low = _first_id_at(engine, q.since - SETTLE_US)
        where.append(M.pk >= (low if low is not None else 2**62))
    if q.until is not None:
        where.append(M.received_at < q.until)
        high = _first_id_at(engine, q.until + SETTLE_US)
        if high is not None:
            where.append(M.pk < high)
    if q.sender:
        where.append(M.sender == q.sender)
    if q.message_type:
        where.append(M.message_type == q.message_type)
    if q.status:
        where.append(M.status == q.status)
    if q.control_id:
        where.append(M.control_id == q.control_id)
    if q.patient:
        where.append(M.patient_ids.contains(f" {q.patient} ", autoescape=True))
    if q.before is not None:
        where.append(M.pk < q.before)
    return where


def _words(q: MessageQuery) -> str:
    """The words the full-text index must hold: the free text and the patient identifier."""
    return " ".join(w for w in (q.text, q.patient) if w).translate(_DELIMITERS)


def _family(engine: Engine, family: str) -> list[str]:
    """The message types stored of a family ("ADT": ADT, ADT^A01, ADT^A08, ...): one index
    seek per type (a loose index scan), not a scan of the messages."""
    found: list[str] = []
    cursor: str | None = None
    high = family + "^\U0010ffff"
    with engine.connect() as conn:
        for _ in range(200):
            after = M.message_type > cursor if cursor is not None else M.message_type >= family
            cursor = conn.execute(
                select(func.min(M.message_type)).where(after, M.message_type <= high)
            ).scalar()
            if cursor is None:
                break
            if cursor == family or cursor.startswith(family + "^"):
                found.append(cursor)
    return found


def _select(engine: Engine, q: MessageQuery, columns: Any, limit: int) -> Any:
    """The page's query. A type family becomes one ordered, limited query per stored type,
    merged: each walks its own index range newest first, so none reads more than a page."""
    if q.message_type and "^" not in q.message_type:
        types = _family(engine, q.message_type) or [q.message_type]
        if len(types) > 1:
            parts = []
            for exact in types:
                sub = _one(engine, replace(q, message_type=exact), columns, limit).subquery()
                parts.append(select(*sub.c))
            merged = union_all(*parts).subquery()
            return select(*merged.c).order_by(merged.c.pk.desc()).limit(limit)
        q = replace(q, message_type=types[0])
    return _one(engine, q, columns, limit)


def _one(engine: Engine, q: MessageQuery, columns: Any, limit: int) -> Any:
    words = _words(q)
    where = _conditions(engine, q)
    if not words.strip():
        return select(*columns).where(*where).order_by(M.pk.desc()).limit(limit)
    if engine.dialect.name == "postgresql":
        match = literal_column("hl7_messages.search").op("@@")(
            func.plainto_tsquery(text("'simple'"), words)
        )
        return select(*columns).where(match, *where).order_by(M.pk.desc()).limit(limit)
    tokens = _WORD.findall(words)
    if not tokens:  # nothing the index knows (punctuation only): the other filters decide
        return select(*columns).where(*where).order_by(M.pk.desc()).limit(limit)
    # FTS5: each word a quoted string, all required; walked newest first by rowid. Words that
    # most messages hold (MSH, a common test name) are not walked: each candidate of the rare
    # words is checked for them by rowid (an FTS5 seek), so no long list is read.
    rare, common = _by_frequency(engine, tokens)
    fts = table("hl7_messages_fts", column("rowid"))  # the FTS5 table (migration 0014)
    rowid = fts.c.rowid
    checks = []
    for i, word in enumerate(common):
        other = table("hl7_messages_fts", column("rowid")).alias(f"f{i}")
        checks.append(
            select(literal_column("1"))
            .select_from(other)
            .where(literal_column(f"f{i}.hl7_messages_fts").op("MATCH")(_phrase([word])),
                   other.c.rowid == rowid)
            .exists()
        )  # fmt: skip
    return (
        select(*columns)
        .select_from(fts)
        .join(hl7_messages, M.pk == rowid)
        .where(literal_column("hl7_messages_fts").op("MATCH")(_phrase(rare)), *checks, *where)
        .order_by(rowid.desc())
        .limit(limit)
    )


def _phrase(tokens: list[str]) -> str:
    return " ".join('"' + t.replace('"', '""') + '"' for t in tokens)


COMMON_SHARE = 0.2  # a word in more than this share of the messages counts as common


def _by_frequency(engine: Engine, tokens: list[str]) -> tuple[list[str], list[str]]:
    """The query's words split into the rarest (walked by the index) and the common ones
    (checked per candidate), from the index's own counts (fts5vocab, migration 0014)."""
    words = list(dict.fromkeys(t.lower() for t in tokens))
    if len(words) < 2:
        return words, []
    with engine.connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                text("SELECT term, doc FROM hl7_messages_fts_terms WHERE term IN "
                     f"({', '.join(f':w{i}' for i in range(len(words)))})"),
                {f"w{i}": w for i, w in enumerate(words)},
            ).all()
        )  # fmt: skip
        total = conn.execute(text("SELECT max(rowid) FROM hl7_messages_fts")).scalar() or 0
    ranked = sorted(words, key=lambda w: counts.get(w, 0))
    common = [w for w in ranked[1:] if counts.get(w, 0) > COMMON_SHARE * total]
    return [w for w in ranked if w not in common], common


def search(engine: Engine, q: MessageQuery, limit: int = 50) -> list[dict[str, Any]]:
    """One page of messages matching every filter, newest first (without their bytes)."""
    limit = max(1, min(limit, MAX_PAGE))
    with engine.connect() as conn:
        rows = conn.execute(_select(engine, q, LISTED, limit)).all()
    return [
        {
            "id": r.pk, "received_at": r.received_at / 1e6, "sender": r.sender,
            "type": r.message_type, "control_id": r.control_id, "status": r.status,
            "error": r.error or "", "resources": (r.resources or "").split(),
            "version": r.version,
        }
        for r in rows
    ]  # fmt: skip


def matching_ids(engine: Engine, q: MessageQuery, limit: int) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(_select(engine, q, (M.pk,), limit))]


def export(engine: Engine, q: MessageQuery, limit: int = MAX_EXPORT) -> Iterator[bytes]:
    """The matching messages as one file: each message's segments end with CR, and a blank
    line (CR LF) separates messages, newest first."""
    ids = matching_ids(engine, q, limit)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with engine.connect() as conn:
            rows = dict(conn.execute(select(M.pk, M.raw).where(M.pk.in_(chunk))).all())
        for pk in chunk:
            raw = bytes(rows.get(pk) or b"")
            if raw:
                yield raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r\r\n"


def senders(engine: Engine, since_us: int) -> list[str]:
    """Senders heard from since `since_us` (the search form's suggestions)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(M.sender).where(M.received_at >= since_us).group_by(M.sender).limit(200)
        ).all()
    return sorted(r[0] for r in rows)


# -- one message's tree -------------------------------------------------------------------------


@dataclass
class Node:
    """A field (or component) of a segment, with its name from the v2 tables."""

    position: str  # PID-3, PID-3.1, PID-3[2]
    name: str
    value: str
    datatype: str = ""
    table: str = ""
    children: list[Node] = field(default_factory=list)


@dataclass
class SegmentTree:
    name: str
    long_name: str
    fields: list[Node]


_HL7APY_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8",
                    "2.8.1", "2.8.2")  # fmt: skip


@cache
def _segment_reference(segment: str, version: str) -> dict[int, tuple[str, str, str, list[str]]]:
    """{field number: (name, datatype, table, component names)} from hl7apy's copy of the v2
    definitions; {} for a segment it does not know (Z segments)."""
    from hl7apy import load_reference
    from hl7apy.exceptions import ChildNotFound, InvalidName

    version = version if version in _HL7APY_VERSIONS else "2.5"
    try:
        ref = load_reference(segment, "Segment", version)
    except (ChildNotFound, InvalidName, KeyError, ValueError):
        return {}
    out: dict[int, tuple[str, str, str, list[str]]] = {}
    for child in ref[1]:
        name, spec = child[0], child[1]
        try:
            number = int(name.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            continue
        components = [c[1][3] for c in spec[1]] if spec[0] == "sequence" else []
        label, datatype, table = (spec[3], spec[2], spec[4]) if spec[0] == "leaf" else (
            spec[3], spec[2], spec[4])  # fmt: skip
        out[number] = (_title(label), str(datatype or ""), str(table or ""),
                       [_title(str(c)) for c in components])  # fmt: skip
    return out


# hl7apy names fields, not segments: the common segments' names (HL7 v2 chapter 2-8)
SEGMENT_NAMES = {
    "MSH": "Message header", "EVN": "Event type", "PID": "Patient identification",
    "PD1": "Patient additional demographic", "NK1": "Next of kin", "PV1": "Patient visit",
    "PV2": "Patient visit - additional", "MRG": "Merge patient information",
    "ORC": "Common order", "OBR": "Observation request", "OBX": "Observation/result",
    "NTE": "Notes and comments", "AL1": "Patient allergy", "DG1": "Diagnosis",
    "IN1": "Insurance", "GT1": "Guarantor", "SPM": "Specimen", "TQ1": "Timing/quantity",
    "MSA": "Message acknowledgment", "ERR": "Error", "SFT": "Software segment",
    "ROL": "Role", "PR1": "Procedures", "TXA": "Transcription document header",
}  # fmt: skip


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize() if name else ""


def tree(raw: bytes, version: str) -> list[SegmentTree]:
    """The message's segments and non-empty fields, named; repetitions and components
    as children. Unknown segments and fields keep their positions, unnamed."""
    body = raw.decode("utf-8", "replace").replace("\r\n", "\r").replace("\n", "\r")
    if not body.startswith("MSH") or len(body) < 8:
        return []
    fs, comp, rep = body[3], body[4], body[5]
    out: list[SegmentTree] = []
    for line in filter(None, body.split("\r")):
        parts = line.split(fs)
        name = parts[0][:3]
        ref = _segment_reference(name, version)
        # MSH-1 is the field separator itself: MSH's fields are shifted by one
        values = [fs, *parts[1:]] if name == "MSH" else parts[1:]
        nodes: list[Node] = []
        for number, value in enumerate(values, start=1):
            if not value:
                continue
            label, datatype, table, components = ref.get(number, ("", "", "", []))
            node = Node(f"{name}-{number}", label, value, datatype, table)
            repetitions = [value] if name == "MSH" and number <= 2 else value.split(rep)
            for r, repetition in enumerate(repetitions, start=1):
                holder = node
                if len(repetitions) > 1:
                    holder = Node(f"{name}-{number}[{r}]", label, repetition, datatype, table)
                    node.children.append(holder)
                parts_c = repetition.split(comp) if not (name == "MSH" and number <= 2) else []
                if len(parts_c) > 1:
                    for c, cvalue in enumerate(parts_c, start=1):
                        if cvalue:
                            cname = components[c - 1] if c <= len(components) else ""
                            holder.children.append(Node(f"{name}-{number}.{c}", cname, cvalue))
            nodes.append(node)
        out.append(SegmentTree(name, SEGMENT_NAMES.get(name, ""), nodes))
    return out
