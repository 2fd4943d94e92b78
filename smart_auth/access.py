"""What a grant may do on each interaction: the SMART scope rules behind `fhir_server`'s hook.

A permission on a type is granted by the resource scopes naming that type (or `*`) with that
letter. `user/` scopes are capped by the user's role; `patient/` scopes (and every scope of a
user whose role is `patient`) confine access to the launch patient's compartment; scopes with a
query (`patient/Observation.rs?category=...`) only reach resources matching it. A client's
Subscriptions are its own (`fhir_server.subscriptions.ownership`): another's is not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, or_, select, true

from fhir_server.errors import FhirError, not_found
from fhir_server.search.extract import IndexRows, extract
from fhir_server.search.match import unmatched
from fhir_server.search.query import Compiler, Row, compartment_condition
from fhir_server.search.registry import patient_compartment
from fhir_server.store.models import resource_versions, resources
from fhir_server.subscriptions.ownership import OWNED_TYPES, owned_ids, owned_only
from smart_auth.policy import Grant
from smart_auth.roles import RoleTable, role_cap
from smart_auth.scopes import ResourceScope, parse_resource_scope

R = resources.c
Restriction = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The ways a permission is granted, OR-ed: (patient to confine to or None, query)."""

    alternatives: tuple[tuple[str | None, Restriction], ...]

    @property
    def limited(self) -> bool:
        return all(patient is not None or query for patient, query in self.alternatives)


@lru_cache(maxsize=4096)
def _parsed(scopes: frozenset[str]) -> tuple[ResourceScope, ...]:
    return tuple(p for s in sorted(scopes) if (p := parse_resource_scope(s)) is not None)


def forbidden(text: str) -> FhirError:
    return FhirError(403, text, "forbidden")


def in_compartment_type(res_type: str) -> bool:
    return res_type == "Patient" or bool(patient_compartment(res_type))


class GrantAccess:
    """The `fhir_server.api.access.Access` of one request's grant."""

    def __init__(self, grant: Grant, roles: RoleTable, base_url: str = "") -> None:
        self.grant = grant
        self.base_url = base_url
        self.roles = roles
        self.scopes = _parsed(grant.scopes)
        self._decisions: dict[tuple[str, str], Decision] = {}

    def decide(self, perm: str, res_type: str) -> Decision:
        key = (perm, res_type)
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        grant = self.grant
        alternatives: list[tuple[str | None, Restriction]] = []
        for scope in self.scopes:
            if scope.res_type not in ("*", res_type) or perm not in scope.perms:
                continue
            capped = scope.context == "user" and grant.role is not None
            if capped and perm not in role_cap(self.roles, grant.role, res_type):
                continue
            confined = scope.context == "patient" or grant.role == "patient"
            if confined and not grant.patient:
                continue
            alternatives.append((grant.patient if confined else None, scope.query))
        if not alternatives:
            raise forbidden(
                f"The access token grants no '{perm}' permission on {res_type} "
                f"(scopes: {' '.join(sorted(grant.scopes)) or 'none'})"
            )
        if any(patient is None and not query for patient, query in alternatives):
            alternatives = [(None, ())]
        decision = Decision(tuple(dict.fromkeys(alternatives)))
        self._decisions[key] = decision
        return decision

    # -- the Access protocol ------------------------------------------------------------------

    def require(self, perm: str, res_type: str) -> None:
        self.decide(perm, res_type)

    def require_unconfined(self, perm: str, res_type: str, why: str) -> None:
        if self.decide(perm, res_type).limited:
            raise forbidden(f"{why} is not available to a patient-confined or restricted scope")

    def search_conditions(self, res_type: str) -> list[ColumnElement[bool]]:
        return self._conditions(self.decide("s", res_type), res_type) + owned_only(
            self.requester(), res_type, R.res_type, R.res_id
        )

    def history_conditions(self, res_type: str | None) -> list[ColumnElement[bool]]:
        V = resource_versions.c  # noqa: N806
        return owned_only(self.requester(), res_type, V.res_type, V.res_id)

    def _conditions(self, decision: Decision, res_type: str) -> list[ColumnElement[bool]]:
        """A restriction's unknown parameter is an error (strict), never a silent widening."""
        if not decision.limited:
            return []
        alternatives = []
        for patient, query in decision.alternatives:
            parts: list[ColumnElement[bool]] = []
            if patient is not None and in_compartment_type(res_type):
                parts.append(compartment_condition(patient, res_type))
            if query:
                parts.extend(
                    Compiler(self.base_url, strict=True).compile(res_type, list(query)).where
                )
            alternatives.append(and_(true(), *parts))
        return [or_(false(), *alternatives)]

    def check_stored(self, conn: Connection, perm: str, res_type: str, res_id: str) -> None:
        decision = self.decide(perm, res_type)
        if res_type in OWNED_TYPES and not owned_ids(conn, self.requester(), [res_id]):
            exists = conn.execute(
                select(R.pk).where(R.res_type == res_type, R.res_id == res_id)
            ).first()
            if exists is not None:
                raise not_found(f"{res_type}/{res_id} is not known")
        if not decision.limited:
            return
        conditions = self._conditions(decision, res_type)
        found = conn.execute(
            select(R.pk).where(R.res_type == res_type, R.res_id == res_id, *conditions)
        ).first()
        if found is None:
            exists = conn.execute(
                select(R.pk).where(R.res_type == res_type, R.res_id == res_id)
            ).first()
            if exists is not None:
                raise forbidden(f"{res_type}/{res_id} lies outside what the access token may reach")

    def check_body(self, perm: str, resource: Any) -> None:
        """New content must fit one of the ways the permission is granted: inside the
        patient's compartment and matching the scope's query restriction, if any."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return  # the interaction itself reports the malformed body
        res_type = resource["resourceType"]
        decision = self.decide(perm, res_type)
        if not decision.limited:
            return
        rows = extract(resource, self.base_url)
        reasons = []
        for patient, query in decision.alternatives:
            why = None if patient is None else _outside_patient(res_type, resource, rows, patient)
            if why is None and query:
                why = unmatched(res_type, rows, query)
                why = why and f"{why}, which the access token requires for writes"
            if why is None:
                return
            reasons.append(why)
        raise forbidden("; ".join(dict.fromkeys(reasons)))

    def require_system(self, perm: str, res_type: str, why: str) -> None:
        for scope in self.scopes:
            if (
                scope.context == "system"
                and scope.res_type in ("*", res_type)
                and perm in scope.perms
                and not scope.query
            ):
                return
        raise forbidden(
            f"{why} needs a backend-services scope granting '{perm}' on {res_type}, such as "
            f"system/{res_type}.{'rs' if perm in 'rs' else 'cud'} "
            f"(scopes: {' '.join(sorted(self.grant.scopes)) or 'none'})"
        )

    def requester(self) -> str:
        return self.grant.client_id or self.grant.subject

    def describe(self) -> dict[str, Any]:
        g = self.grant
        return {
            "subject": g.subject,
            "scopes": sorted(g.scopes),
            "client_id": g.client_id,
            "patient": g.patient,
            "encounter": g.encounter,
            "fhir_user": g.fhir_user,
            "role": g.role,
        }

    def filter_rows(self, conn: Connection, rows: Sequence[Row]) -> list[Row]:
        kept: list[Row] = []
        by_type: dict[str, list[Row]] = {}
        for row in rows:
            by_type.setdefault(row.res_type, []).append(row)
        for res_type, group in by_type.items():
            try:
                decision = self.decide("r", res_type)
            except FhirError:
                continue
            if res_type in OWNED_TYPES:
                mine = owned_ids(conn, self.requester(), (r.res_id for r in group))
                group = [r for r in group if r.res_id in mine]
            if not decision.limited:
                kept.extend(group)
                continue
            conditions = self._conditions(decision, res_type)
            ids = [r.res_id for r in group]
            allowed = {
                r[0]
                for r in conn.execute(
                    select(R.res_id).where(R.res_type == res_type, R.res_id.in_(ids), *conditions)
                )
            }
            kept.extend(r for r in group if r.res_id in allowed)
        return kept


def _outside_patient(res_type: str, resource: Any, rows: IndexRows, patient: str) -> str | None:
    """Why content lies outside Patient/{patient}'s compartment, or None when it is inside
    (or of a type that has no compartment membership)."""
    if not in_compartment_type(res_type):
        return None
    if res_type == "Patient":
        if resource.get("id") == patient:
            return None
        return "A patient-confined token may only write its own Patient"
    params = patient_compartment(res_type)
    for code, target_type, target_id, _ in rows.references:
        if code in params and target_type == "Patient" and target_id == patient:
            return None
    return (
        f"The {res_type} does not belong to Patient/{patient}, "
        "the only patient this access token may write for"
    )
