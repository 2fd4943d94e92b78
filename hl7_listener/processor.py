"""Store, map and acknowledge one message: the rules shared by MLLP and POST /hl7/messages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fhir_server.api.bundles import apply_transaction
from fhir_server.api.interactions import Context, FhirError
from hl7_listener.ack import build_ack
from hl7_listener.inbox import Inbox
from mappers.hl7v2 import ParseError, parse, to_bundle
from mappers.hl7v2.mapping import SUPPORTED, MappingError, UnsupportedMessage
from mappers.hl7v2.parser import Message

log = logging.getLogger("interop.hl7")


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
    # Conditional PUTs on the same patient from concurrent senders would race (two creates
    # for one identifier); applying one bundle at a time keeps identities unique.
    _apply_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def handle(self, raw: bytes, peer: str = "") -> Reply:
        """Store, then acknowledge (and map) by the message's rules; never raises for bad input."""
        try:
            msg = parse(raw)
        except (ParseError, IndexError) as exc:
            try:
                pk = self.inbox.store(raw, peer or "unknown", "", "", "")
            except Exception:
                log.exception("inbox unavailable")
                return Reply(build_ack(None, "AR", "cannot store message now, resend later"), None)
            ack = build_ack(None, "AR", str(exc), "102")
            self.inbox.finish(pk, "failed", ack, str(exc))
            return Reply(ack, pk)
        accept, application = msg.msh.get(15).upper(), msg.msh.get(16).upper()
        enhanced = bool(accept or application)
        ok, err, rej = ("CA", "CE", "CR") if enhanced else ("AA", "AE", "AR")

        def answer(ack: bytes, positive: bool) -> bytes | None:
            return ack if not enhanced or wanted(accept, positive) else None

        sender = f"{msg.msh.get(3)}^{msg.msh.get(4)}"
        try:
            original = self.inbox.find_original(sender, msg.control_id)
            pk = self.inbox.store(raw, sender, msg.control_id, msg.message_type, msg.version)
        except Exception:
            log.exception("inbox unavailable")
            ack = build_ack(msg, rej, "cannot store message now, resend later", "207")
            return Reply(answer(ack, False), None)
        if original is not None and original.ack is not None:
            self.inbox.finish(pk, "duplicate", original.ack, f"duplicate of {original.pk}")
            return Reply(original.ack, pk)
        if msg.message_type not in SUPPORTED:
            code = "200" if msg.msh.get(9, 1) not in {s.split("^")[0] for s in SUPPORTED} else "201"
            text = f"message type {msg.message_type} is not supported"
            ack = build_ack(msg, rej, text, code)
            self.inbox.finish(pk, "failed", ack, text)
            return Reply(answer(ack, False), pk)
        if not enhanced:
            if self.ack_mode == "store":
                ack = build_ack(msg, ok)
                self.inbox.finish(pk, "received", ack)
                return Reply(ack, pk)
            return Reply(self.map_stored(pk, msg, ok, err), pk)
        commit = build_ack(msg, ok)
        self.inbox.finish(pk, "received", commit)  # duplicates get the accept ACK again
        if self.ack_mode == "store" and application == "NE":
            return Reply(answer(commit, True), pk)  # mapped in the background

        def followup() -> bytes | None:
            app_ack = self.map_stored(pk, msg, keep_ack=True)
            positive = app_ack.split(b"\r")[1][4:6] == b"AA"
            return app_ack if wanted(application, positive) else None

        return Reply(answer(commit, True), pk, followup)

    def reject_oversize(self, raw: bytes, peer: str) -> None:
        """A frame over the size limit: kept for inspection, answered AR by the listener."""
        text = "message exceeds the size limit"
        try:
            pk = self.inbox.store(raw, peer or "unknown", "", "", "")
        except Exception:
            log.exception("inbox unavailable")
            return
        self.inbox.finish(pk, "failed", build_ack(None, "AR", text), text)

    def map_stored(
        self, pk: int, msg: Message, ok: str = "AA", err: str = "AE", keep_ack: bool = False
    ) -> bytes:
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
            return ack
        except Exception as exc:
            log.exception("mapping message %s failed", pk)
            ack = build_ack(msg, err, "internal error while mapping", "207")
            self.inbox.finish(
                pk, "failed", None if keep_ack else ack, f"{type(exc).__name__}: {exc}"
            )
            return ack
        ack = build_ack(msg, ok)
        self.inbox.finish(pk, "processed", None if keep_ack else ack, None, resources)
        return ack

    def apply(self, bundle: dict[str, object]) -> list[str]:
        """Apply through the one write path, exactly like a POSTed transaction."""
        with self._apply_lock:
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
