"""Helpers for the per-channel audit tests: switch the trail on for one test's store and
read back the AuditEvents that name a resource."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fhir_server.search.query import matching_ids
from fhir_server.store.audit import CHANNEL_SYSTEM, AuditTrail
from fhir_server.store.repository import Store


@contextmanager
def audited(store: Store) -> Iterator[AuditTrail]:
    """The audit trail on for the block (the test apps run with it off), as `create_app`
    installs it with INTEROP_AUTH_AUDIT."""
    before = store.audit
    trail = AuditTrail(store).install()
    try:
        yield trail
    finally:
        store.audit = before


def events_naming(store: Store, reference: str) -> list[dict[str, Any]]:
    """Every AuditEvent with `reference` among its entities."""
    with store.connection() as conn:
        ids = matching_ids(conn, "AuditEvent", [("entity", reference)], store.base_url, None)
    found = [store.read("AuditEvent", i) for i in ids]
    return [s.json() for s in found if s is not None and not s.deleted]


def channel_of(event: dict[str, Any]) -> tuple[str, str] | None:
    """(channel, source) of an event a channel's change left; None for a REST user's."""
    agent = event["agent"][0]
    identifier = agent["who"].get("identifier") or {}
    if identifier.get("system") != CHANNEL_SYSTEM:
        return None
    return identifier["value"], agent.get("name", "")


def assert_change_audited(
    store: Store, references: list[str], channel: str, source_part: str
) -> dict[str, Any]:
    """Each of `references` is named by an AuditEvent of `channel` whose source names
    `source_part`; returns one such event."""
    event: dict[str, Any] = {}
    for reference in references:
        events = [e for e in events_naming(store, reference) if channel_of(e)]
        assert events, f"no AuditEvent names {reference}"
        mine = [e for e in events if (channel_of(e) or ("", ""))[0] == channel]
        assert mine, f"no {channel} AuditEvent for {reference}: {[channel_of(e) for e in events]}"
        event = mine[-1]
        assert source_part in event["agent"][0]["name"], event["agent"]
        assert event["outcome"] == "0"
    return event
