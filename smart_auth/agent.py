"""Who the agent of a request is, for the audit trail: smart_auth only names the caller;
the store writes the AuditEvents (fhir_server.store.audit)."""

from __future__ import annotations

from fhir_server.store.audit import Actor
from smart_auth.policy import Grant


def actor_for(grant: Grant | None, address: str | None) -> Actor:
    """The `Actor` of a request made with `grant` (None: anonymous) from `address`."""
    if grant is None:
        return Actor(address=address)
    return Actor(
        subject=grant.subject,
        fhir_user=grant.fhir_user,
        client_id=grant.client_id or None,
        patient=grant.patient,
        address=address,
    )
