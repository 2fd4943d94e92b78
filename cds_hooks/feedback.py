"""Feedback on cards (POST /cds-services/{id}/feedback), kept as FHIR AuditEvents.

Each feedback entry names a card by its uuid; the card must have been issued by this service to
the same client (`cds_cards`). It becomes one AuditEvent: type `urn:interop:cds|card-feedback`,
subtype `urn:interop:cds:outcome|accepted` or `|overridden`, the client as agent, the card's
resource and patient as entities, with the card uuid, the resource version, the accepted
suggestions and the override reason and comment as entity details. Searchable like any
AuditEvent (`AuditEvent?subtype=urn:interop:cds:outcome|overridden&patient=...`).

Acknowledging a critical lab result is that same record: feedback `accepted` on its card.
The `critical-labs` service leaves out a result version that has an accepted AuditEvent, so
the acknowledgement is FHIR data too; a corrected result (a new version) alerts again.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from cds_hooks.models import cds_cards
from fhir_server.errors import FhirError
from fhir_server.store.audit import Actor
from fhir_server.store.db import write_transaction
from fhir_server.store.repository import FhirReads, Store

FEEDBACK_TYPE = {
    "system": "urn:interop:cds",
    "code": "card-feedback",
    "display": "CDS Hooks card feedback",
}
OUTCOME_SYSTEM = "urn:interop:cds:outcome"
OVERRIDE_SYSTEM = "urn:interop:cds:override-reason"
OUTCOMES = ("accepted", "overridden")
CARD_DAYS = 90  # how long feedback on an issued card is accepted
MAX_FEEDBACK = 100


def remember(engine: Engine, service: str, iss: str, issued: list[dict[str, Any]]) -> None:
    """Record the cards issued (once per uuid); forget cards older than CARD_DAYS. Two calls
    issuing the same card at once: the loser of the race finds it recorded on its retry."""
    if not issued:
        return
    cards = {c["uuid"]: c for c in issued}
    for attempt in (1, 2):
        now = int(time.time())
        try:
            with write_transaction(engine) as conn:
                conn.execute(delete(cds_cards).where(cds_cards.c.issued < now - CARD_DAYS * 86400))
                known = {
                    r[0]
                    for r in conn.execute(
                        select(cds_cards.c.uuid).where(cds_cards.c.uuid.in_(list(cards)))
                    )
                }
                rows = [
                    {
                        "uuid": uid,
                        "service": service,
                        "iss": iss,
                        "issued": now,
                        "focus": json.dumps({k: c[k] for k in ("reference", "version", "patient")}),
                    }
                    for uid, c in cards.items()
                    if uid not in known
                ]
                if rows:
                    conn.execute(insert(cds_cards), rows)
            return
        except IntegrityError:
            if attempt == 2:
                raise


def acknowledged(reads: FhirReads, references: list[str]) -> dict[str, set[str]]:
    """reference -> versions acknowledged (accepted feedback on their card)."""
    out: dict[str, set[str]] = {}
    for start in range(0, len(references), 50):
        chunk = references[start : start + 50]
        events = reads.search(
            "AuditEvent",
            [
                ("entity", ",".join(chunk)),
                ("subtype", f"{OUTCOME_SYSTEM}|accepted"),
                ("_count", "1000"),
            ],
        )
        for event in events:
            for entity in event.get("entity") or []:
                ref = (entity.get("what") or {}).get("reference")
                if ref in chunk:
                    details = {
                        d.get("type"): d.get("valueString") for d in entity.get("detail") or []
                    }
                    out.setdefault(ref, set()).add(str(details.get("version") or ""))
    return out


def _coding(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {k: str(value[k]) for k in ("system", "code", "display") if value.get(k)} or None


def audit_event(
    iss: str, client_name: str, service: str, item: dict[str, Any], focus: dict[str, Any]
) -> dict[str, Any]:
    outcome = item["outcome"]
    when = item.get("outcomeTimestamp")
    recorded = (
        when
        if isinstance(when, str) and len(when) >= 20
        else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    details = [
        {"type": "card", "valueString": item["card"]},
        {"type": "service", "valueString": service},
    ]
    if focus.get("version"):
        details.append({"type": "version", "valueString": str(focus["version"])})
    for accepted in item.get("acceptedSuggestions") or []:
        if isinstance(accepted, dict) and accepted.get("id"):
            details.append({"type": "acceptedSuggestion", "valueString": str(accepted["id"])[:64]})
    given = item.get("overrideReason")
    reason: dict[str, Any] = given if isinstance(given, dict) else {}
    coding = _coding(reason.get("reason"))
    if coding:
        details.append(
            {
                "type": "overrideReason",
                "valueString": " | ".join(coding.get(k, "") for k in ("system", "code", "display")),
            }
        )
    comment = reason.get("userComment")
    if isinstance(comment, str) and comment.strip():
        details.append({"type": "userComment", "valueString": comment.strip()[:2000]})
    entities: list[dict[str, Any]] = [
        {"what": {"reference": focus["reference"]}, "detail": details}
    ]
    if focus.get("patient"):
        entities.append(
            {
                "what": {"reference": f"Patient/{focus['patient']}"},
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": FEEDBACK_TYPE,
        "subtype": [{"system": OUTCOME_SYSTEM, "code": outcome}],
        "action": "E",
        "recorded": recorded,
        "outcome": "0",
        "outcomeDesc": f"card {outcome}"
        + (f": {coding.get('display') or coding.get('code')}" if coding else ""),
        "agent": [
            {
                "who": {
                    "identifier": {"system": "urn:interop:cds:client", "value": iss or "-"},
                    "display": client_name or iss or "CDS client (auth off)",
                },
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": "interop-server CDS Hooks"}},
        "entity": entities,
    }
    return event


def record(
    store: Store, engine: Engine, service: str, iss: str, client_name: str, body: Any
) -> int:
    """Validate a feedback request and write its AuditEvents in one transaction; the number
    recorded. 400 for a malformed entry, 404 for a card this client was never given."""
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_FEEDBACK:
        raise FhirError(400, f"feedback must be a list of 1 to {MAX_FEEDBACK} entries")
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("card"), str):
            raise FhirError(400, f"feedback[{n}].card must be the uuid of a card")
        if item.get("outcome") not in OUTCOMES:
            raise FhirError(400, f"feedback[{n}].outcome must be accepted or overridden")
        if item["outcome"] == "overridden" and item.get("acceptedSuggestions"):
            raise FhirError(400, f"feedback[{n}]: an overridden card accepts no suggestions")
    uids = [i["card"][:36] for i in items]
    with engine.connect() as conn:
        rows = conn.execute(
            select(cds_cards.c.uuid, cds_cards.c.focus).where(
                cds_cards.c.uuid.in_(uids), cds_cards.c.service == service, cds_cards.c.iss == iss
            )
        ).all()
    issued = {r[0]: json.loads(r[1]) for r in rows}
    unknown = [u for u in uids if u not in issued]
    if unknown:
        raise FhirError(
            404, f"card {unknown[0]} was not issued by {service} to this client", "not-found"
        )
    entries = [
        {
            "resource": audit_event(iss, client_name, service, item, issued[item["card"]]),
            "request": {"method": "POST", "url": "AuditEvent"},
        }
        for item in items
    ]
    store.apply(
        {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        Actor.of_channel("cds", iss or "cds"),
    )
    return len(entries)
