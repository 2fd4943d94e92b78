"""What a grant may do on each interaction: the SMART scope rules behind `fhir_server`'s hook.

A permission on a type is granted by the resource scopes naming that type (or `*`) with that
letter. `user/` scopes are capped by the user's role; `patient/` scopes (and every scope of a
user whose role is `patient`) confine access to the launch patient's compartment; scopes with a
query (`patient/Observation.rs?category=...`) only reach resources matching it. A client's
Subscriptions are its own (`fhir_server.subscriptions.ownership`): another's is not found.

Confined grants read what lies in the patient's compartment (of the Patient type: the patient
itself), resources of types outside every patient compartment (Practitioner, Medication...),
and the Provenance of the patient's record (`_provenance_of`).
They write only what belongs to their patient alone: content and stored version both in its
compartment and in no other patient's, as the compartment's search parameters index it; types
outside the compartment are read-only to them, and they neither create nor delete a Patient.
Grants without confinement or query keep a zero-cost path: no extra condition, no query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    and_,
    case,
    exists,
    false,
    not_,
    or_,
    select,
    true,
)

from fhir_server.errors import FhirError, not_found
from fhir_server.search.extract import IndexRows, extract
from fhir_server.search.match import unmatched
from fhir_server.search.query import (
    RESULT_PARAMS,
    Compiler,
    Row,
    compartment_condition,
    compartment_members,
)
from fhir_server.search.registry import patient_compartment, resource_types
from fhir_server.store.models import idx_reference, resource_versions, resources
from fhir_server.subscriptions.ownership import OWNED_TYPES, owned_ids, owned_only
from smart_auth.policy import Grant
from smart_auth.roles import RoleTable, role_cap
from smart_auth.scopes import ResourceScope, parse_resource_scope

R = resources.c
Restriction = tuple[tuple[str, str], ...]
VERBS = {"c": "create", "u": "update", "d": "delete"}


@dataclass(frozen=True, slots=True)
class Decision:
    """The ways a permission is granted, OR-ed: (patient to confine to or None, query)."""

    alternatives: tuple[tuple[str | None, Restriction], ...]

    @property
    def limited(self) -> bool:
        return all(patient is not None or query for patient, query in self.alternatives)

    @property
    def patient(self) -> str | None:
        """The patient every alternative confines to (None: not confined to one patient)."""
        patients = {patient for patient, _ in self.alternatives}
        return patients.pop() if len(patients) == 1 else None


@lru_cache(maxsize=4096)
def _parsed(scopes: frozenset[str]) -> tuple[ResourceScope, ...]:
    return tuple(p for s in sorted(scopes) if (p := parse_resource_scope(s)) is not None)


def forbidden(text: str) -> FhirError:
    return FhirError(403, text, "forbidden")


def in_compartment_type(res_type: str) -> bool:
    return res_type == "Patient" or bool(patient_compartment(res_type))


def confined_may(perm: str, res_type: str) -> bool:
    """Whether a patient-confined scope can hold `perm` on `res_type` at all: types outside
    every patient compartment are shared by all patients (read-only), and a new or deleted
    Patient is no one's own record."""
    if perm not in VERBS or res_type == "*":
        return True
    if res_type == "Patient":
        return perm == "u"
    return bool(patient_compartment(res_type))


class GrantAccess:
    """The `fhir_server.api.access.Access` of one request's grant."""

    def __init__(self, grant: Grant, roles: RoleTable, base_url: str = "") -> None:
        self.grant = grant
        self.base_url = base_url
        self.roles = roles
        self.scopes = _parsed(grant.scopes)
        self._decisions: dict[tuple[str, str], Decision | str] = {}  # str: why refused

    def decide(self, perm: str, res_type: str) -> Decision:
        key = (perm, res_type)
        cached = self._decisions.get(key)
        if cached is None:
            cached = self._decisions[key] = self._decide(perm, res_type)
        if isinstance(cached, str):
            raise forbidden(cached)  # a new error each time: callers annotate theirs
        return cached

    def _decide(self, perm: str, res_type: str) -> Decision | str:
        grant = self.grant
        alternatives: list[tuple[str | None, Restriction]] = []
        read_only = False
        for scope in self.scopes:
            if scope.res_type not in ("*", res_type) or perm not in scope.perms:
                continue
            capped = scope.context == "user" and grant.role is not None
            if capped and perm not in role_cap(self.roles, grant.role, res_type):
                continue
            confined = scope.context == "patient" or grant.role == "patient"
            if confined and not grant.patient:
                continue
            if confined and not confined_may(perm, res_type):
                read_only = True
                continue
            alternatives.append((grant.patient if confined else None, scope.query))
        if not alternatives:
            if read_only:
                return f"A patient-confined access token may not {VERBS[perm]} {res_type}: " + (
                    "a Patient record is only ever updated by its own patient"
                    if res_type == "Patient"
                    else f"{res_type} lies outside the patient compartment, shared by every "
                    "patient, and is read-only to patient-confined scopes"
                )
            return (
                f"The access token grants no '{perm}' permission on {res_type} "
                f"(scopes: {' '.join(sorted(grant.scopes)) or 'none'})"
            )
        if any(patient is None and not query for patient, query in alternatives):
            alternatives = [(None, ())]
        return Decision(tuple(dict.fromkeys(alternatives)))

    def _granted(self, perm: str, res_type: str) -> Decision | None:
        try:
            return self.decide(perm, res_type)
        except FhirError:
            return None

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

    def visible_conditions(
        self, res_type: str, rows: FromClause = resources
    ) -> list[ColumnElement[bool]]:
        """What may be seen by reading or searching (for a grant that does neither: what it
        may write); nothing at all without any permission on the type."""
        decisions = [d for perm in "sr" if (d := self._granted(perm, res_type)) is not None]
        if not decisions:
            decisions = [d for perm in "cud" if (d := self._granted(perm, res_type)) is not None]
        if not decisions:
            return [false()]
        owned = owned_only(self.requester(), res_type, rows.c.res_type, rows.c.res_id)
        if any(not d.limited for d in decisions):
            return owned
        merged = Decision(tuple(dict.fromkeys(a for d in decisions for a in d.alternatives)))
        return self._conditions(merged, res_type, rows) + owned

    def _conditions(
        self,
        decision: Decision,
        res_type: str,
        rows: FromClause = resources,
        write: bool = False,
    ) -> list[ColumnElement[bool]]:
        """A restriction's unknown parameter is an error (strict), never a silent widening."""
        if not decision.limited:
            return []
        alternatives = []
        for patient, query in decision.alternatives:
            parts: list[ColumnElement[bool]] = []
            if patient is not None:
                parts.extend(_confinement(patient, res_type, rows, write))
            if query:
                parts.extend(self._restriction(res_type, query, rows))
            alternatives.append(and_(true(), *parts))
        return [or_(false(), *alternatives)]

    def _restriction(
        self, res_type: str, query: Restriction, rows: FromClause
    ) -> list[ColumnElement[bool]]:
        compiler = Compiler(self.base_url, strict=True)
        if rows is resources:
            return compiler.compile(res_type, list(query)).where
        conditions = []
        for name, value in query:
            if name not in RESULT_PARAMS:
                condition = compiler.condition(res_type, rows, name, value)
                if condition is not None:
                    conditions.append(condition)
        return conditions

    def judges_stored(self, perm: str, res_type: str) -> bool:
        return res_type in OWNED_TYPES or self.decide(perm, res_type).limited

    def check_stored(self, conn: Connection, perm: str, res_type: str, res_id: str) -> None:
        """A write needs the stored resource to be the patient's alone; an update of an id
        that does not exist is a create and needs that permission."""
        decision = self.decide(perm, res_type)
        if res_type in OWNED_TYPES and not owned_ids(conn, self.requester(), [res_id]):
            exists = conn.execute(
                select(R.pk).where(R.res_type == res_type, R.res_id == res_id)
            ).first()
            if exists is not None:
                raise not_found(f"{res_type}/{res_id} is not known")
        if not decision.limited:
            return
        conditions = self._conditions(decision, res_type, write=perm in VERBS)
        reachable = case((and_(true(), *conditions), 1), else_=0)
        found = conn.execute(
            select(reachable).where(R.res_type == res_type, R.res_id == res_id)
        ).first()
        if found is None:
            if perm == "u":
                self.decide("c", res_type)
            return
        if not found[0]:
            raise forbidden(f"{res_type}/{res_id} lies outside what the access token may reach")

    def check_body(
        self, perm: str, resource: Any, resolve: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """New content must fit one of the ways the permission is granted: inside the
        patient's compartment and no other's, and matching the scope's query restriction, if
        any. `resolve` first turns conditional references into the ones that will be stored."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return  # the interaction itself reports the malformed body
        res_type = resource["resourceType"]
        decision = self.decide(perm, res_type)
        if not decision.limited:
            return
        if resolve is not None:
            resolve(resource)
        rows = extract(resource, self.base_url)
        reasons = []
        for patient, query in decision.alternatives:
            why = None if patient is None else _outside_patient(res_type, resource, rows, patient)
            if why is None and query:
                why = unmatched(res_type, rows, query, self.base_url)
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
            decision = self._granted("r", res_type)
            if decision is None:
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


def _confinement(
    patient: str, res_type: str, rows: FromClause, write: bool
) -> list[ColumnElement[bool]]:
    """Rows of `res_type` a grant confined to Patient/{patient} reaches: in its compartment
    (of Patient: the patient itself); to write, also in no other patient's compartment."""
    params = patient_compartment(res_type)
    if res_type == "Patient":
        inside: ColumnElement[bool] = rows.c.res_id == patient
    elif params:
        inside = compartment_condition(patient, res_type, rows)
    else:
        return [false()] if write else []  # shared by every patient: read-only
    if res_type == "Provenance" and not write:
        inside = or_(inside, _provenance_of(patient, rows))
    if not write or not params:
        return [inside]
    ref = idx_reference.c
    elsewhere = rows.c.pk.in_(
        select(ref.resource_pk).where(
            ref.res_type == res_type,
            ref.param.in_(params),
            ref.target_type == "Patient",
            ref.target_id != patient,
        )
    )
    return [inside, not_(elsewhere)]


@lru_cache(maxsize=1)
def _shared_types() -> tuple[str, ...]:
    """Types outside every patient compartment: shared by all patients, read by each."""
    return tuple(t for t in sorted(resource_types()) if not in_compartment_type(t))


def _provenance_of(patient: str, rows: FromClause) -> ColumnElement[bool]:
    """Provenance about Patient/{patient}'s record: its targets are the patient, resources in
    its compartment or shared ones, at least one of them the patient's. R4's compartment
    places a Provenance by its Patient targets only, so the record of who made a report or
    an Observation (an AI model, a lab feed) would otherwise stay hidden from the very
    patient app that reads the report (US Core asks for `_revinclude=Provenance:target`)."""
    target = idx_reference.alias("provenance_target")
    t = target.c
    member = resources.alias("provenance_member")
    patients = compartment_members(patient, idx_reference.alias("provenance_member_ref"))
    the_patients = or_(
        and_(t.target_type == "Patient", t.target_id == patient),
        exists().where(
            member.c.res_type == t.target_type,
            member.c.res_id == t.target_id,
            member.c.deleted == false(),
            member.c.pk.in_(patients),
        ),
    )
    of_this = and_(t.resource_pk == rows.c.pk, t.param == "target")
    foreign = not_(or_(the_patients, t.target_type.in_(_shared_types())))
    return and_(exists().where(of_this, the_patients), not_(exists().where(of_this, foreign)))


def _outside_patient(res_type: str, resource: Any, rows: IndexRows, patient: str) -> str | None:
    """Why content lies outside Patient/{patient}'s compartment or also in another patient's,
    or None when it is Patient/{patient}'s alone. The compartment's search parameters decide,
    from the same index rows the store will keep (references in nested elements included)."""
    params = patient_compartment(res_type)
    if res_type != "Patient" and not params:
        return f"{res_type} lies outside the patient compartment and is read-only"
    if res_type == "Patient" and resource.get("id") != patient:
        return "A patient-confined token may only write its own Patient"
    owners = {
        (code, target_id)
        for code, target_type, target_id, _ in rows.references
        if code in params and target_type == "Patient"
    }
    others = sorted(code for code, target_id in owners if target_id != patient)
    if others:
        return (
            f"The {res_type} would also belong to another patient's compartment (through "
            f"{', '.join(dict.fromkeys(others))}); a token confined to Patient/{patient} may "
            "only write what belongs to that patient alone"
        )
    if res_type != "Patient" and not owners:
        return (
            f"The {res_type} does not belong to Patient/{patient}, "
            "the only patient this access token may write for"
        )
    return None
