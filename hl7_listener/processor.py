"""Store, map and acknowledge one message: the rules shared by MLLP and POST /hl7/messages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from fhir_server import metrics
from fhir_server.errors import FhirError
from fhir_server.store.apply import EntryResult
from fhir_server.store.audit import Actor
from fhir_server.store.repository import Store, Transaction
from hl7_listener.ack import build_ack
from hl7_listener.inbox import CONTROL_ID_REUSE, Arrival, Inbox, content_hash
from hl7_listener.lanes import Lanes
from hl7_listener.result_order import Stale, StaleResults, regressions, without
from mappers.hl7v2 import ParseError, parse, to_bundle
from mappers.hl7v2.mapping import (
    SUPPORTED,
    MappingError,
    UnsupportedMessage,
    ident_query,
    patient_key,
)
from mappers.hl7v2.parser import Message
from mappers.hl7v2.vocabulary import Vocabulary

log = logging.getLogger("interop.hl7")


class Mapped(NamedTuple):
    """The outcome of mapping a stored message: its ACK, and whether it was applied."""

    ack: bytes
    ok: bool


@dataclass
class Reply:
    """What to answer a message with.

    `ack` goes back at once (None when MSH-15 asks for no accept ACK); `followup`, in
    enhanced mode, maps the stored message and returns the application ACK that MSH-16
    asks for (or None), sent after the accept ACK on the same connection.
    """

    ack: bytes | None
    pk: int | None
    followup: Callable[[], bytes | None] | None = None


def wanted(condition: str, positive: bool) -> bool:
    """MSH-15/16 (HL7 table 0155): AL always, NE never, ER on errors, SU on success.
    Empty in enhanced mode counts as AL."""
    return {"NE": False, "ER": not positive, "SU": positive}.get(condition, True)


def _positive(ack: bytes | None) -> bool:
    """Whether a stored ACK says AA/CA (so MSH-15 ER/SU can tell if it was sent)."""
    try:
        msa = parse(ack).first("MSA") if ack else None
    except (ParseError, IndexError):
        return False
    return msa is not None and msa.get(1) in ("AA", "CA")


@dataclass
class Processor:
    """ack_mode 'map' acknowledges after mapping; 'store' right after the inbox commit.

    Mapping runs in per-patient lanes (`workers` threads): one patient's messages are
    applied in arrival (inbox) order, different patients' in parallel."""

    inbox: Inbox
    store: Store
    ack_mode: str = "map"
    systems: Mapping[str, str] = field(default_factory=dict)
    tz: str = "UTC"
    workers: int = 4
    vocabulary: Vocabulary | None = None  # v2 table translations (the terminology service)
    lanes: Lanes = field(init=False)
    _pending: set[int] = field(init=False, default_factory=set)
    _pending_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.lanes = Lanes(self.workers)

    def handle(self, raw: bytes, peer: str = "") -> Reply:
        """Store, then acknowledge (and map) by the message's rules; never raises for bad input."""
        return self.handle_many([(raw, peer)], deferred=False)[0]

    def handle_many(self, items: list[tuple[bytes, str]], deferred: bool = True) -> list[Reply]:
        """Several messages (from several connections) stored in one commit, in order.
        `deferred`: an ACK that waits for mapping comes as the `followup`, so the caller
        (the MLLP listener) is free to store the next messages meanwhile."""
        steps = [self._accept(raw, peer, deferred) for raw, peer in items]
        stored = self._store_many([arrival for arrival, _ in steps])
        return [then(s) for (_, then), s in zip(steps, stored, strict=True)]

    def _accept(
        self, raw: bytes, peer: str, deferred: bool
    ) -> tuple[Arrival, Callable[[Arrival | None], Reply]]:
        """The message to store, and what to answer once it is stored (None: it was not)."""
        try:
            msg = parse(raw)  # splits MSH only: the rest when mapping reads it
        except (ParseError, IndexError) as exc:
            ack = build_ack(None, "AR", str(exc), "102", where="MSH")
            failed = Arrival(raw, peer or "unknown", "", status="failed", ack=ack, error=str(exc),
                             content_hash=content_hash(raw))  # fmt: skip

            def unreadable(stored: Arrival | None) -> Reply:
                if stored is None:
                    text = "cannot store message now, resend later"
                    return Reply(build_ack(None, "AR", text), None)
                return Reply(ack, stored.pk)

            return failed, unreadable
        accept, application = msg.msh.get(15).upper(), msg.msh.get(16).upper()
        enhanced = bool(accept or application)
        ok, err, rej = ("CA", "CE", "CR") if enhanced else ("AA", "AE", "AR")

        def answer(ack: bytes | None, positive: bool) -> bytes | None:
            return ack if not enhanced or wanted(accept, positive) else None

        arrival = Arrival(
            raw, f"{msg.msh.get(3)}^{msg.msh.get(4)}", msg.control_id, msg.message_type,
            msg.version, content_hash=content_hash(msg),
        )  # fmt: skip
        mapped_now = not enhanced and self.ack_mode == "map"
        followup_due = enhanced and not (self.ack_mode == "store" and application == "NE")
        if msg.message_type not in SUPPORTED:
            code = "200" if msg.msh.get(9, 1) not in {s.split("^")[0] for s in SUPPORTED} else "201"
            arrival.error = f"message type {msg.message_type} is not supported"
            arrival.status = "failed"
            arrival.ack = build_ack(msg, rej, arrival.error, code, where="MSH^1^9")
        else:
            if not mapped_now:  # the ACK goes out before mapping: store it with the message
                arrival.ack = build_ack(msg, ok)
            if mapped_now or followup_due:  # scheduled at commit, in arrival order
                arrival.on_stored = lambda a: self._schedule(a, msg, keep_ack=not mapped_now)

        def then(stored: Arrival | None) -> Reply:
            if stored is None:
                ack = build_ack(msg, rej, "cannot store message now, resend later", "207")
                return Reply(answer(ack, False), None)
            pk = stored.pk
            assert pk is not None
            if stored.original is not None:  # the original's ACK, only if it would have had one
                return Reply(answer(stored.ack, _positive(stored.ack)), pk)
            if stored.status == "failed":
                return Reply(answer(stored.ack, False), pk)
            mapping: Future[Mapped] | None = stored.mapping
            if mapped_now and deferred:
                return Reply(None, pk, lambda: self._result(pk, msg, mapping, ok, err).ack)
            if mapped_now:
                return Reply(self._result(pk, msg, mapping, ok, err).ack, pk)
            if not followup_due:
                return Reply(answer(stored.ack, True), pk)  # mapped in the background

            def followup() -> bytes | None:
                mapped = self._result(pk, msg, mapping, keep_ack=True)
                return mapped.ack if wanted(application, mapped.ok) else None

            return Reply(answer(stored.ack, True), pk, followup)

        return arrival, then

    def _schedule(self, arrival: Arrival, msg: Message, keep_ack: bool) -> None:
        pk = arrival.pk
        assert pk is not None
        warning = arrival.warning
        arrival.mapping = self.submit(
            pk, msg, lambda: self.map_stored(pk, msg, keep_ack=keep_ack, note=warning)
        )

    def submit(self, pk: int, msg: Message, job: Callable[[], Mapped]) -> Future[Mapped]:
        """Queue a mapping in its patient's lane (messages without a patient: their own)."""
        with self._pending_lock:
            self._pending.add(pk)

        def run() -> Mapped:
            try:
                return job()
            finally:
                with self._pending_lock:
                    self._pending.discard(pk)

        return self.lanes.submit(patient_key(msg, self.systems) or f"message:{pk}", run)

    def _result(
        self, pk: int, msg: Message, mapping: Future[Mapped] | None, ok: str = "AA",
        err: str = "AE", keep_ack: bool = False,
    ) -> Mapped:  # fmt: skip
        """The scheduled mapping's outcome (mapped here if scheduling failed)."""
        if mapping is None:
            return self.map_stored(pk, msg, ok, err, keep_ack)
        return mapping.result()

    def _store(self, arrival: Arrival) -> Arrival | None:
        """The inbox commit; None when the database cannot take the message now."""
        return self._store_many([arrival])[0]

    def _store_many(self, arrivals: list[Arrival]) -> list[Arrival | None]:
        try:
            stored: list[Arrival | None] = list(self.inbox.store_many(arrivals))
        except Exception:
            log.exception("inbox unavailable")
            stored = [None] * len(arrivals)
        for arrival, kept in zip(arrivals, stored, strict=True):
            _count_arrival(arrival, kept)
        return stored

    def reject_oversize(self, raw: bytes, peer: str) -> None:
        """A frame over the size limit: kept for inspection, answered AR by the listener."""
        text = "message exceeds the size limit"
        ack = build_ack(None, "AR", text)
        self._store(Arrival(raw, peer or "unknown", "", status="failed", ack=ack, error=text))

    def map_stored(
        self, pk: int, msg: Message, ok: str = "AA", err: str = "AE", keep_ack: bool = False,
        note: str | None = None,
    ) -> Mapped:  # fmt: skip
        """Map and apply; records processed/failed with produced resource ids in the same
        transaction as the resources. keep_ack leaves the ACK already sent (and replayed to
        duplicates) as it was. A result that would move backwards is left out (warning)."""
        started = time.perf_counter()
        try:
            mapped = self._map_stored(pk, msg, ok, err, keep_ack, note)
        finally:
            metrics.HL7_MAPPING_SECONDS.labels(msg.message_type or "unknown").observe(
                time.perf_counter() - started
            )
        sender = metrics.sender_label(f"{msg.msh.get(3)}^{msg.msh.get(4)}")
        metrics.HL7_MESSAGES.labels(sender, "processed" if mapped.ok else "failed").inc()
        return mapped

    def _map_stored(
        self, pk: int, msg: Message, ok: str, err: str, keep_ack: bool, note: str | None
    ) -> Mapped:
        ack = build_ack(msg, ok)
        stale: list[Stale] = []
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            while True:
                bundle = to_bundle(
                    msg, systems=self.systems, tz=self.tz, received=received,
                    vocabulary=self.vocabulary,
                )  # fmt: skip
                if stale:
                    bundle = without(bundle, stale, ident_query)
                warning = "; ".join([*([note] if note else []), *(s.describe() for s in stale)])

                recorded: list[bool] = []

                def record(
                    tx: Transaction, results: list[EntryResult], warning: str = warning,
                    recorded: list[bool] = recorded,
                ) -> None:  # fmt: skip
                    if not tx.changes:
                        return  # nothing changed
                    found = regressions(tx)
                    if found:
                        raise StaleResults(found)
                    made = _produced(results) or [f"{t}/{i}" for t, i, _ in tx.changes]
                    self.inbox.finish(pk, "processed", None if keep_ack else ack, None, made,
                                      warning or None, conn=tx.conn)  # fmt: skip
                    recorded.append(True)

                try:
                    self._apply(bundle, record, msg)
                    if not recorded:  # nothing changed: no hook ran
                        self.inbox.finish(pk, "processed", None if keep_ack else ack, None, [],
                                          warning or None)  # fmt: skip
                    return Mapped(ack, True)
                except StaleResults as exc:
                    stale += exc.stale
        except (MappingError, UnsupportedMessage, FhirError) as exc:
            text = exc.outcome()["issue"][0].get("diagnostics", "") if isinstance(
                exc, FhirError) else str(exc)  # fmt: skip
            where, code = (exc.where, exc.code) if isinstance(exc, MappingError) else ("", "207")
            ack = build_ack(msg, err, text or "mapping failed", code, where=where)
            self.inbox.finish(pk, "failed", None if keep_ack else ack, text, warning=note)
            return Mapped(ack, False)
        except Exception as exc:
            log.exception("mapping message %s failed", pk)
            ack = build_ack(msg, err, "internal error while mapping", "207")
            self.inbox.finish(
                pk, "failed", None if keep_ack else ack, f"{type(exc).__name__}: {exc}",
                warning=note,
            )  # fmt: skip
            return Mapped(ack, False)

    def _apply(
        self,
        bundle: dict[str, Any],
        record: Callable[[Transaction, list[EntryResult]], None],
        msg: Message,
    ) -> None:
        """Apply through the store's one write path; `record` runs inside its transaction.
        The AuditEvent names the sender (MSH-3^MSH-4) as the agent."""
        actor = Actor.of_channel("hl7", f"{msg.msh.get(3)}^{msg.msh.get(4)}")
        # concurrent messages for one patient stay one Patient: the store locks identities
        self.store.apply(bundle, actor, before_commit=record)

    def process_pending(self) -> int:
        """Map messages left 'received' whose mapper is gone (a crash before mapping, here
        or on another replica: their lease ran out), oldest first through the patient lanes;
        waits until they are done. Each is claimed first, so one listener maps it."""
        with self._pending_lock:
            mine = set(self._pending)
        claimed = [pk for pk in self.inbox.claim_unmapped() if pk not in mine]
        rows = [r for r in map(self.inbox.get, claimed) if r is not None]
        futures = []
        for row in rows:
            try:
                msg = parse(row.raw)
            except (ParseError, IndexError):
                self.inbox.finish(row.pk, "failed", None, "unreadable message")
                metrics.HL7_MESSAGES.labels(metrics.sender_label(row.sender), "failed").inc()
                continue
            note = _reuse_note(row.control_id) if CONTROL_ID_REUSE in row.flags else None
            futures.append(self.submit(row.pk, msg, _job(self, row.pk, msg, note)))
        for f in futures:
            f.result()
        return len(futures)

    def replay(self, pk: int) -> str:
        row = self.inbox.get(pk)
        if row is None:
            raise KeyError(pk)
        msg = parse(row.raw)
        note = _reuse_note(row.control_id) if CONTROL_ID_REUSE in row.flags else None
        self.submit(pk, msg, _job(self, pk, msg, note)).result()
        done = self.inbox.get(pk)
        return done.status if done else "unknown"

    def close(self) -> None:
        self.lanes.shutdown()


def _count_arrival(arrival: Arrival, stored: Arrival | None) -> None:
    """Messages whose fate is known at arrival (mapped ones are counted when mapped)."""
    sender = metrics.sender_label(arrival.sender)
    if stored is None:
        metrics.HL7_MESSAGES.labels(sender, "rejected").inc()  # not stored: the sender resends
        return
    metrics.HL7_LAST_MESSAGE.labels(sender).set(time.time())
    if stored.original is not None or stored.status == "duplicate":
        metrics.HL7_MESSAGES.labels(sender, "duplicate").inc()
    elif stored.status == "failed":
        metrics.HL7_MESSAGES.labels(sender, "failed").inc()


def _produced(results: list[EntryResult]) -> list[str]:
    """Type/id of every written entry (changed or not)."""
    return [f"{r.res_type}/{r.res_id}" for r in results if r.res_id and r.outcome != "read"]


def _job(proc: Processor, pk: int, msg: Message, note: str | None) -> Callable[[], Mapped]:
    return lambda: proc.map_stored(pk, msg, keep_ack=True, note=note)


def _reuse_note(control_id: str) -> str:
    return f"control id {control_id} reused by this sender for other content"
