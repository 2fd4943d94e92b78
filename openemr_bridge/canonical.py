"""Reads of the canonical store the bridge needs (writes go through `Store.apply` only)."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson
from fhir_server.store.repository import HasStore


def find_one(ctx: HasStore, res_type: str, query: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The one resource a search finds (None for none; the first of several)."""
    with ctx.store.transaction() as tx:
        ids = tx.search_ids(res_type, query)
        if not ids:
            return None
        found = tx.current(res_type, ids[0])
    if found is None or found[1].deleted or not found[1].body:
        return None
    body: dict[str, Any] = fhirjson.loads(found[1].body)
    return body


def read(ctx: HasStore, res_type: str, res_id: str) -> dict[str, Any] | None:
    stored = ctx.store.read(res_type, res_id)
    if stored is None or stored.deleted or not stored.body:
        return None
    body: dict[str, Any] = fhirjson.loads(stored.body)
    return body


def identifier(resource: dict[str, Any], system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None
