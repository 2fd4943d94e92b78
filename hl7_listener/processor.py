"""Store, map and acknowledge one message: the rules shared by MLLP and POST /hl7/messages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
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

    def handle(self, raw: bytes, peer: str = "") -> tuple[bytes, int | None]:
        """Returns the ACK bytes and the inbox id; never raises for bad input."""
        try:
            msg = parse(raw)
        except (ParseError, IndexError) as exc:
            try:
                pk = self.inbox.store(raw, peer or "unknown", "", "", "")
            except Exception:
                log.exception("inbox unavailable")
                return build_ack(None, "AR", "cannot store message now, resend later"), None
            ack = build_ack(None, "AR", str(exc), "102")
            self.inbox.finish(pk, "failed", ack, str(exc))
            return ack, pk
        enhanced = bool(msg.msh.get(15) or msg.msh.get(16))
        ok, err, rej = ("CA", "CE", "CR") if enhanced else ("AA", "AE", "AR")
        sender = f"{msg.msh.get(3)}^{msg.msh.get(4)}"
        try:
            original = self.inbox.find_original(sender, msg.control_id)
            pk = self.inbox.store(raw, sender, msg.control_id, msg.message_type, msg.version)
        except Exception:
            log.exception("inbox unavailable")
            return build_ack(msg, rej, "cannot store message now, resend later", "207"), None
        if original is not None and original.ack is not None:
            self.inbox.finish(pk, "duplicate", original.ack, f"duplicate of {original.pk}")
            return original.ack, pk
        if msg.message_type not in SUPPORTED:
            code = "200" if msg.msh.get(9, 1) not in {s.split("^")[0] for s in SUPPORTED} else "201"
            text = f"message type {msg.message_type} is not supported"
            ack = build_ack(msg, rej, text, code)
            self.inbox.finish(pk, "failed", ack, text)
            return ack, pk
        if self.ack_mode == "store" or enhanced:
            ack = build_ack(msg, ok)
            self.inbox.finish(pk, "received", ack)
            return ack, pk
        return self.map_stored(pk, msg, ok, err), pk

    def map_stored(self, pk: int, msg: Message, ok: str = "AA", err: str = "AE") -> bytes:
        """Map and apply; records processed/failed with produced resource ids."""
        try:
            bundle = to_bundle(msg, systems=self.systems, tz=self.tz)
            resources = self.apply(bundle)
        except (MappingError, UnsupportedMessage, FhirError) as exc:
            text = exc.outcome()["issue"][0].get("diagnostics", "") if isinstance(
                exc, FhirError) else str(exc)  # fmt: skip
            ack = build_ack(msg, err, text or "mapping failed", "207")
            self.inbox.finish(pk, "failed", ack, text)
            return ack
        except Exception as exc:
            log.exception("mapping message %s failed", pk)
            ack = build_ack(msg, err, "internal error while mapping", "207")
            self.inbox.finish(pk, "failed", ack, f"{type(exc).__name__}: {exc}")
            return ack
        ack = build_ack(msg, ok)
        self.inbox.finish(pk, "processed", ack, None, resources)
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
            self.map_stored(row.pk, parse(row.raw))
            done += 1
        return done

    def replay(self, pk: int) -> str:
        row = self.inbox.get(pk)
        if row is None:
            raise KeyError(pk)
        self.map_stored(pk, parse(row.raw))
        done = self.inbox.get(pk)
        return done.status if done else "unknown"
