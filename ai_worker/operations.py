"""What the AI worker's FHIR operations do, as plain functions of the store and the caller:

- `analyze` (`POST /ImagingStudy/{id}/$analyze`, Parameters `model`, `reason`, both optional)
  queues an analysis and answers with the Task(s);
- `review` (`POST /DiagnosticReport/{id}/$approve` and `$reject`, Parameters `reason`, required
  for a rejection) for a physician or radiologist: status final or entered-in-error, with a
  Provenance naming the reviewer. Only a reviewed report is final.

The composition root (interop.ai_operations) registers them on the FHIR API's operation table;
this channel never sees an HTTP request.
"""

from __future__ import annotations

from typing import Any, Protocol

from ai_worker.errors import BadInput
from ai_worker.service import AiService, now_instant
from fhir_server.errors import FhirError, not_found
from fhir_server.store.audit import Actor
from fhir_server.store.repository import Store, StoredResource
from mappers.ai.review import ReviewError, review_bundle

REVIEWER_ROLES = frozenset({"physician", "radiologist"})


class CallerAccess(Protocol):
    """The caller's authorization as the API passes it (None when auth is off); its SMART
    grant, when it has one, is its `grant` attribute."""

    def require(self, perm: str, res_type: str) -> None: ...


def _reviewer(access: CallerAccess | None, params: dict[str, Any]) -> dict[str, Any]:
    """The reviewer: from the token (role physician or radiologist), or, with auth off, from
    the `reviewer` parameter (a Reference)."""
    if access is None:
        given = params.get("reviewer")
        if isinstance(given, dict) and (given.get("reference") or given.get("display")):
            return given
        return {"display": "unauthenticated reviewer (INTEROP_AUTH=off)"}
    grant = getattr(access, "grant", None)
    role = getattr(grant, "role", None)
    if role not in REVIEWER_ROLES:
        raise FhirError(
            403,
            "approving or rejecting an AI report needs a user with role physician or radiologist",
            "forbidden",
        )
    fhir_user = getattr(grant, "fhir_user", None)
    if fhir_user:
        return {"reference": fhir_user}
    return {"display": str(getattr(grant, "subject", "reviewer"))}


def may_analyze(service: AiService, access: CallerAccess | None) -> None:
    """Refuse an analysis before its inputs are read: the caller may not create Tasks (403),
    or imaging is off (422)."""
    if access is not None:
        access.require("c", "Task")
    if not service.settings.dicomweb_url:
        raise FhirError(
            422, "imaging is off (INTEROP_DICOMWEB_URL is not set): no pixels to analyse",
            "not-supported",
        )  # fmt: skip


def analyze(
    service: AiService, access: CallerAccess | None, study_id: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Queue the study's analyses (by `model`, or every model that takes it), once
    `may_analyze` let the caller: a Parameters resource naming the Task of each."""
    study = service.ctx.store.read("ImagingStudy", study_id)
    if study is None or study.deleted:
        raise not_found(f"ImagingStudy/{study_id} is not known")
    models = [str(params["model"])] if params.get("model") else service.models_for(study_id)
    if not models:
        raise FhirError(422, "no installed model takes this study", "not-supported")
    grant = getattr(access, "grant", None)
    requester = {"reference": grant.fhir_user} if grant is not None and grant.fhir_user else None
    out = []
    for model in models:
        try:
            task_id, new = service.request(
                study_id, model, requester, str(params.get("reason") or "requested by hand")
            )
        except BadInput as exc:
            raise FhirError(422, str(exc), "processing") from None
        out.append(
            {
                "name": "task",
                "valueReference": {
                    "reference": f"Task/{task_id}",
                    "display": f"{model}: {'queued' if new else 'already queued or running'}",
                },
            }
        )
    return {"resourceType": "Parameters", "parameter": out}


def review(
    store: Store, access: CallerAccess | None, actor: Actor | None, report_id: str,
    params: dict[str, Any], approve: bool,
) -> StoredResource:  # fmt: skip
    """Approve or reject an AI DiagnosticReport: the report as stored afterwards."""
    reviewer = _reviewer(access, params)
    stored = store.read("DiagnosticReport", report_id)
    if stored is None or stored.deleted:
        raise not_found(f"DiagnosticReport/{report_id} is not known")
    report = stored.json()
    observations = []
    for ref in report.get("result") or []:
        res_type, _, obs_id = str(ref.get("reference", "")).partition("/")
        obs = store.read(res_type, obs_id) if res_type == "Observation" else None
        if obs is not None and not obs.deleted:
            observations.append(obs.json())
    try:
        bundle = review_bundle(
            report, observations, approve, reviewer, now_instant(), str(params.get("reason") or "")
        )
    except ReviewError as exc:
        status, code = (409, "business-rule") if exc.conflict else (400, "required")
        raise FhirError(status, str(exc), code) from None
    # authorised by the caller as one operation; its Provenance and Observation updates are
    # the server's own bookkeeping, written whatever the caller's other scopes
    store.apply(bundle, actor)  # the reviewer is the agent
    updated = store.read("DiagnosticReport", report_id)
    assert updated is not None
    return updated
