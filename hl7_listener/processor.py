"""Store, map and acknowledge one message: the rules shared by MLLP and POST /hl7/messages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from fhir_server.api.bundles import apply_transaction
from fhir_server.api.interactions import Context, FhirError
from hl7_listener.ack import build_ack
from hl7_listener.inbox import Arrival, Inbox
from mappers.hl7v2 import ParseError, parse, to_bundle
from mappers.hl7v2.mapping import SUPPORTED, MappingError, UnsupportedMessage
from mappers.hl7v2.parser import Message

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


@dataclass
class Processor:
    """ack_mode 'map' acknowledges after mapping; 'store' right after the inbox commit."""

    inbox: Inbox
    ctx: Context
    ack_mode: str = "map"
    systems: Mapping[str, str] = field(default_factory=dict)
    tz: str = "UTC"

    def handle(self, raw: bytes, peer: str = "") -> Reply:
        """Store, then acknowledge (and map) by the message's rules; never raises for bad input."""
        try:
            msg = parse(raw)
        except (ParseError, IndexError) as exc:
            ack = build_ack(None, "AR", str(exc), "102")
            stored = self._store(Arrival(raw, peer or "unknown", "", status="failed", ack=ack,
                                         error=str(exc)))  # fmt: skip
            if stored is None:
                return Reply(build_ack(None, "AR", "cannot store message now, resend later"), None)
            return Reply(ack, stored.pk)
        accept, application = msg.msh.get(15).upper(), msg.msh.get(16).upper()
        enhanced = bool(accept or application)
        ok, err, rej = ("CA", "CE", "CR") if enhanced else ("AA", "AE", "AR")

        def answer(ack: bytes | None, positive: bool) -> bytes | None:
            return ack if not enhanced or wanted(accept, positive) else None

        arrival = Arrival(
            raw, f"{msg.msh.get(3)}^{msg.msh.get(4)}", msg.control_id, msg.message_type,
            msg.version,
        )  # fmt: skip
        mapped_now = not enhanced and self.ack_mode == "map"
        if msg.message_type not in SUPPORTED:
            code = "200" if msg.msh.get(9, 1) not in {s.split("^")[0] for s in SUPPORTED} else "201"
            arrival.error = f"message type {msg.message_type} is not supported"
            arrival.status, arrival.ack = "failed", build_ack(msg, rej, arrival.error, code)
        elif not mapped_now:  # the ACK goes out before mapping: store it with the message
            arrival.ack = build_ack(msg, ok)
        stored = self._store(arrival)
        if stored is None:
            ack = build_ack(msg, rej, "cannot store message now, resend later", "207")
            return Reply(answer(ack, False), None)
        pk = stored.pk
        assert pk is not None
        if stored.original is not None or stored.status == "failed":
            return Reply(stored.ack if stored.original else answer(stored.ack, False), pk)
        if mapped_now:
            return Reply(self.map_stored(pk, msg, ok, err).ack, pk)
        if self.ack_mode == "store" and (not enhanced or application == "NE"):
            return Reply(answer(stored.ack, True), pk)  # mapped in the background

        def followup() -> bytes | None:
            mapped = self.map_stored(pk, msg, keep_ack=True)
            return mapped.ack if wanted(application, mapped.ok) else None

        return Reply(answer(stored.ack, True), pk, followup)

    def _store(self, arrival: Arrival) -> Arrival | None:
        """The inbox commit; None when the database cannot take the message now."""
        try:
            return self.inbox.store(arrival)
        except Exception:
            log.exception("inbox unavailable")
            return None

    def reject_oversize(self, raw: bytes, peer: str) -> None:
        """A frame over the size limit: kept for inspection, answered AR by the listener."""
        text = "message exceeds the size limit"
        ack = build_ack(None, "AR", text)
        self._store(Arrival(raw, peer or "unknown", "", status="failed", ack=ack, error=text))

    def map_stored(
        self, pk: int, msg: Message, ok: str = "AA", err: str = "AE", keep_ack: bool = False
    ) -> Mapped:
        """Map and apply; records processed/failed with produced resource ids. keep_ack
        leaves the ACK already sent (and replayed to duplicates) as it was."""
        try:
            bundle = to_bundle(msg, systems=self.systems, tz=self.tz)
            resources = self.apply(bundle)
        except (MappingError, UnsupportedMessage, FhirError) as exc:
            text = exc.outcome()["issue"][0].get("diagnostics", "") if isinstance(
                exc, FhirError) else str(exc)  # fmt: skip
            ack = build_ack(msg, err, text or "mapping failed", "207")
            self.inbox.finish(pk, "failed", None if keep_ack else ack, text)
            return Mapped(ack, False)
        except Exception as exc:
            log.exception("mapping message %s failed", pk)
            ack = build_ack(msg, err, "internal error while mapping", "207")
            self.inbox.finish(
                pk, "failed", None if keep_ack else ack, f"{type(exc).__name__}: {exc}"
            )
            return Mapped(ack, False)
        ack = build_ack(msg, ok)
        self.inbox.finish(pk, "processed", None if keep_ack else ack, None, resources)
        return Mapped(ack, True)

    def apply(self, bundle: dict[str, object]) -> list[str]:
        """Apply through the one write path, exactly like a POSTed transaction."""
        # concurrent messages for one patient stay one Patient: the store locks identities
        out = apply_transaction(self.ctx, dict(bundle))
        return [
            "/".join(e["response"]["location"].split("/_history")[0].split("/")[-2:])
            for e in out.get("entry", [])
            if e.get("response", {}).get("location")
        ]

    def process_pending(self) -> int:
        """Map messages left 'received' (ack-after-store, or a crash before mapping)."""
        done = 0
        for row in self.inbox.list(status="received", limit=1000):
            self.map_stored(row.pk, parse(row.raw), keep_ack=True)
            done += 1
        return done

    def replay(self, pk: int) -> str:
        row = self.inbox.get(pk)
        if row is None:
            raise KeyError(pk)
        self.map_stored(pk, parse(row.raw), keep_ack=True)
        done = self.inbox.get(pk)
        return done.status if done else "unknown"
