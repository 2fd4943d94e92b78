"""Canonical -> OpenEMR: create in OpenEMR a Patient that first appeared elsewhere.

Run for each changed Patient (the outbox consumer), at least once, so it must be idempotent:
a Patient that already has an OpenEMR identifier is left alone, and before creating, OpenEMR is
searched by name and birth date for a patient whose `pubpid` holds our source identifier (a
create whose answer was lost). When OpenEMR would refuse the data, nothing is sent: the reason
becomes a tag on the Patient (`_tag=urn:interop:openemr-pending|`), listed by
`interop openemr pending`. Success adds OpenEMR's pid and uuid to the Patient's identifiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.store.audit import Actor
from fhir_server.store.repository import FhirReads, HasStore
from mappers.openemr import Refusal, Systems, patient_to_openemr
from openemr_bridge import canonical
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.errors import OpenEmrValidationError
from openemr_bridge.sync import PENDING_TAG

log = logging.getLogger("interop.openemr")


@dataclass(frozen=True)
class PushResult:
    status: str  # created, linked, known, pending, gone
    pid: str | None = None
    uuid: str | None = None
    reason: str | None = None


def push_patient(
    ctx: HasStore, client: OpenEmrClient, systems: Systems, patient_id: str
) -> PushResult:
    """Make sure canonical Patient/`patient_id` exists in OpenEMR (see the module docstring)."""
    for _ in range(3):  # a concurrent write between our read and our update: read again
        patient = canonical.read(ctx, "Patient", patient_id)
        if patient is None:
            return PushResult("gone")
        if any(canonical.identifier(patient, s) for s in systems.patient_systems):
            return PushResult("known")
        source = source_identifier(patient, systems)
        if source is None:
            return _pending(ctx, patient, Refusal("no-identifier", "the Patient has no identifier"))
        body = patient_to_openemr(patient, source)
        if isinstance(body, Refusal):
            return _pending(ctx, patient, body)
        found = _find_in_openemr(client, body, source)
        status = "linked" if found else "created"
        if found is None:
            try:
                found = client.create_patient(body)
            except OpenEmrValidationError as exc:
                return _pending(ctx, patient, Refusal("openemr-refused", exc.detail))
        pid, uuid = str(found.get("pid") or ""), str(found.get("uuid") or "")
        try:
            _link(ctx, patient, systems, pid, uuid)
        except FhirError as exc:
            if exc.status == 412:
                continue
            raise
        log.info("Patient/%s %s in OpenEMR as pid %s", patient_id, status, pid)
        return PushResult(status, pid, uuid)
    raise RuntimeError(f"Patient/{patient_id} kept changing while it was pushed to OpenEMR")


def source_identifier(patient: dict[str, Any], systems: Systems) -> str | None:
    """The value OpenEMR keeps in `pubpid`: the first identifier from another source."""
    for ident in patient.get("identifier") or []:
        if ident.get("system") not in (systems.pid, systems.uuid, systems.mrn) and ident.get(
            "value"
        ):
            return str(ident["value"])
    return None


def _find_in_openemr(
    client: OpenEmrClient, body: dict[str, str], source: str
) -> dict[str, Any] | None:
    """pubpid cannot be searched in OpenEMR's API: search by name + DOB, compare pubpid."""
    rows = client.patients(limit=50, fname=body["fname"], lname=body["lname"], DOB=body["DOB"])
    for row in rows:
        if str(row.get("pubpid") or "") == source[:255]:
            return row
    return None


def _write(ctx: HasStore, patient: dict[str, Any]) -> None:
    version = (patient.get("meta") or {}).get("versionId")
    request: dict[str, Any] = {"method": "PUT", "url": f"Patient/{patient['id']}"}
    if version:
        request["ifMatch"] = f'W/"{version}"'
    ctx.store.apply(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": patient, "request": request}],
        },
        Actor.of_channel("openemr", "push to OpenEMR"),
    )


def _tags(patient: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        t for t in (patient.get("meta") or {}).get("tag") or [] if t.get("system") != PENDING_TAG
    ]


def _with_tags(patient: dict[str, Any], tags: list[dict[str, Any]]) -> dict[str, Any]:
    meta = {k: v for k, v in (patient.get("meta") or {}).items() if k not in ("tag",)}
    if tags:
        meta["tag"] = tags
    out = dict(patient)
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def _pending(ctx: HasStore, patient: dict[str, Any], refusal: Refusal) -> PushResult:
    tag = {"system": PENDING_TAG, "code": refusal.code, "display": refusal.reason[:200]}
    current = [
        t for t in (patient.get("meta") or {}).get("tag") or [] if t.get("system") == PENDING_TAG
    ]
    if current != [tag]:
        _write(ctx, _with_tags(patient, [*_tags(patient), tag]))
    return PushResult("pending", reason=refusal.reason)


def _link(ctx: HasStore, patient: dict[str, Any], systems: Systems, pid: str, uuid: str) -> None:
    idents = list(patient.get("identifier") or [])
    if uuid:
        idents.append({"use": "secondary", "system": systems.uuid, "value": uuid})
    if pid:
        idents.append({"use": "secondary", "system": systems.pid, "value": pid})
    updated = _with_tags(patient, _tags(patient))
    updated["identifier"] = idents
    _write(ctx, updated)


def pending(reads: FhirReads, limit: int = 1000) -> list[dict[str, str]]:
    """Patients that could not be created in OpenEMR, with the reason (for the CLI): the
    same search a client would make, `Patient?_tag=urn:interop:openemr-pending|`."""
    query = [("_tag", f"{PENDING_TAG}|"), ("_count", str(limit))]
    out = []
    for res in reads.search("Patient", query):
        tag = next(t for t in res["meta"]["tag"] if t.get("system") == PENDING_TAG)
        name = (res.get("name") or [{}])[0]
        out.append(
            {
                "id": res["id"],
                "name": " ".join([*name.get("given", []), name.get("family", "")]).strip(),
                "birthDate": res.get("birthDate", ""),
                "code": tag.get("code", ""),
                "reason": tag.get("display", ""),
            }
        )
    return out
