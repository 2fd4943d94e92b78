"""FHIR operations of the AI worker, registered in the API's operation table:

- `POST /ImagingStudy/{id}/$analyze` (Parameters: `model`, `reason`, both optional) queues an
  analysis and answers with the Task(s);
- `POST /DiagnosticReport/{id}/$approve` and `$reject` (Parameters: `reason`, required for a
  rejection) for a physician or radiologist: status final or entered-in-error, with a
  Provenance naming the reviewer. Only a reviewed report is final.
"""

from __future__ import annotations

from typing import Any

import orjson

from ai_worker.errors import BadInput
from ai_worker.service import AiService, now_instant
from fhir_server.api.interactions import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.api.operations import Operation, Operations
from fhir_server.errors import FhirError, bad_request, not_found
from mappers.ai.review import ReviewError, review_bundle

REVIEWER_ROLES = frozenset({"physician", "radiologist"})


def _parameters(req: FhirRequest) -> dict[str, Any]:
    """Operation inputs from a Parameters body and the query string (body wins)."""
    values: dict[str, Any] = dict(req.query)
    if req.body.strip() or req.parsed is not None:
        body = _parse_json(req)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise bad_request("an operation takes a Parameters resource")
        for param in body.get("parameter") or []:
            name = param.get("name")
            value = next((v for k, v in param.items() if k.startswith("value")), None)
            if isinstance(name, str) and value is not None:
                values[name] = value
    return values


def _json(status: int, resource: dict[str, Any], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return FhirResponse(status, orjson.dumps(resource), headers or {})


def _reviewer(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The reviewer: from the token (role physician or radiologist), or, with auth off, from
    the `reviewer` parameter (a Reference)."""
    grant = getattr(ctx.access, "grant", None) if ctx.access is not None else None
    if ctx.access is None:
        given = params.get("reviewer")
        if isinstance(given, dict) and (given.get("reference") or given.get("display")):
            return given
        return {"display": "unauthenticated reviewer (INTEROP_AUTH=off)"}
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


def register(operations: Operations, service: AiService) -> None:
    def analyze(ctx: Context, req: FhirRequest, study_id: str) -> FhirResponse:
        if ctx.access is not None:
            ctx.access.require("c", "Task")
        if not service.settings.dicomweb_url:
            raise FhirError(
                422, "imaging is off (INTEROP_DICOMWEB_URL is not set): no pixels to analyse",
                "not-supported",
            )  # fmt: skip
        params = _parameters(req)
        study = ctx.store.read("ImagingStudy", study_id)
        if study is None or study.deleted:
            raise not_found(f"ImagingStudy/{study_id} is not known")
        models = [str(params["model"])] if params.get("model") else service.models_for(study_id)
        if not models:
            raise FhirError(422, "no installed model takes this study", "not-supported")
        grant = getattr(ctx.access, "grant", None)
        requester = (
            {"reference": grant.fhir_user} if grant is not None and grant.fhir_user else None
        )
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
        return _json(200, {"resourceType": "Parameters", "parameter": out})

    def review(approve: bool):  # type: ignore[no-untyped-def]
        def handler(ctx: Context, req: FhirRequest, report_id: str) -> FhirResponse:
            params = _parameters(req)
            reviewer = _reviewer(ctx, params)
            stored = ctx.store.read("DiagnosticReport", report_id)
            if stored is None or stored.deleted:
                raise not_found(f"DiagnosticReport/{report_id} is not known")
            report = stored.json()
            observations = []
            for ref in report.get("result") or []:
                res_type, _, obs_id = str(ref.get("reference", "")).partition("/")
                obs = ctx.store.read(res_type, obs_id) if res_type == "Observation" else None
                if obs is not None and not obs.deleted:
                    observations.append(obs.json())
            try:
                bundle = review_bundle(
                    report, observations, approve, reviewer, now_instant(),
                    str(params.get("reason") or ""),
                )  # fmt: skip
            except ReviewError as exc:
                status, code = (409, "business-rule") if exc.conflict else (400, "required")
                raise FhirError(status, str(exc), code) from None
            # authorised above as one operation; its Provenance and Observation updates are
            # the server's own bookkeeping, written whatever the caller's other scopes
            ctx.store.apply(bundle, ctx.actor)  # the reviewer is the agent
            updated = ctx.store.read("DiagnosticReport", report_id)
            assert updated is not None
            return FhirResponse(200, updated.body, {"ETag": updated.etag})

        return handler

    defs = "urn:interop:ai:operation:"
    operations.register(
        Operation("ImagingStudy", "$analyze", analyze, perm="r", definition=defs + "analyze")
    )
    for name, approve in (("$approve", True), ("$reject", False)):
        operations.register(
            Operation("DiagnosticReport", name, review(approve), perm="u",
                      definition=defs + name[1:])
        )  # fmt: skip
