"""A result never moves backwards: the status check made inside the write transaction.

A preliminary result that arrives after the final one (feeds reorder, interface engines
resend) must not overwrite it. The check runs in the apply's own transaction, after the
store has locked and rewritten the resources (row locks and identity locks on PostgreSQL,
the single writer on SQLite), so no concurrent message can slip between check and write.
A regressing write rolls the whole transaction back with `StaleResults`; the processor
then applies the message again without those entries, pointing its other references at the
stored resources, and keeps a warning in the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_

from fhir_server import fhirjson
from fhir_server.store.models import resource_versions, resources
from fhir_server.store.repository import Transaction

# Later stages outrank earlier ones; a write may keep or raise the rank, never lower it.
# cancelled ends an unfinished result (as final does); a result once final can still be
# amended, corrected or retracted (entered-in-error), but not made preliminary again.
RANKS: dict[str, dict[str, int]] = {
    "Observation": {
        "registered": 0, "preliminary": 1, "final": 2, "cancelled": 2,
        "amended": 3, "corrected": 3, "entered-in-error": 3,
    },
    "DiagnosticReport": {
        "registered": 0, "partial": 1, "preliminary": 1, "final": 2, "cancelled": 2,
        "amended": 3, "corrected": 3, "appended": 3, "entered-in-error": 3,
    },
}  # fmt: skip


@dataclass(frozen=True)
class Stale:
    res_type: str
    res_id: str
    stored: str  # the status kept
    incoming: str  # the status the message said
    identifier: dict[str, Any]

    def describe(self) -> str:
        return (
            f"{self.res_type}/{self.res_id} is {self.stored}; this message says "
            f"{self.incoming}: not applied (a result never moves backwards)"
        )


class StaleResults(Exception):  # noqa: N818 - a signal to the processor, not an error
    def __init__(self, stale: list[Stale]) -> None:
        super().__init__("; ".join(s.describe() for s in stale))
        self.stale = stale


def regressions(tx: Transaction) -> list[Stale]:
    """Updates in this transaction that lower a result's status rank."""
    updated: dict[str, list[str]] = {}
    for res_type, res_id, how in tx.changes:
        if how == "update" and res_type in RANKS:
            updated.setdefault(res_type, []).append(res_id)
    found: list[Stale] = []
    r, v = resources.c, resource_versions.c
    for res_type, ids in updated.items():
        now = {
            row.res_id: (row.version_id, fhirjson.loads(row.body))
            for row in tx.conn.execute(
                select(r.res_id, r.version_id, r.body).where(
                    r.res_type == res_type, r.res_id.in_(ids)
                )
            )
            if row.body
        }
        before = {
            row.res_id: fhirjson.loads(row.body).get("status", "")
            for row in tx.conn.execute(
                select(v.res_id, v.body).where(
                    v.res_type == res_type,
                    tuple_(v.res_id, v.version_id).in_(
                        [(res_id, version - 1) for res_id, (version, _) in now.items()]
                    ),
                )
            )
            if row.body
        }
        rank = RANKS[res_type]
        for res_id, (_, body) in now.items():
            old, new = before.get(res_id, ""), body.get("status", "")
            if old in rank and rank.get(new, 0) < rank[old]:
                ident = (body.get("identifier") or [{}])[0]
                found.append(Stale(res_type, res_id, old, new, ident))
    return found


def without(bundle: dict[str, Any], stale: list[Stale], query: Any) -> dict[str, Any]:
    """The Bundle minus the entries of stale resources; references to them point at the
    stored resources instead. `query(identifier)` gives the conditional query an entry of
    that identity is written under."""
    urls = {f"{s.res_type}?{query(s.identifier)}": f"{s.res_type}/{s.res_id}" for s in stale}
    kept, moved = [], {}
    for entry in bundle["entry"]:
        target = urls.get(entry["request"]["url"])
        if target is None:
            kept.append(entry)
        else:
            moved[entry["fullUrl"]] = target
    _point(kept, moved)
    return {**bundle, "entry": kept}


def _point(node: Any, moved: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in moved:
            node["reference"] = moved[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                _point(value, moved)
    elif isinstance(node, list):
        for item in node:
            _point(item, moved)
