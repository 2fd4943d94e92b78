"""The AI worker's FHIR operations on the API's operation table: `$analyze` on ImagingStudy,
`$approve` and `$reject` on DiagnosticReport. Only the REST glue (Parameters in, response
out) lives here; what they do is `ai_worker.operations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ai_worker import operations as ai
from ai_worker.service import AiService
from fhir_server import fhirjson
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.api.definitions import own, parameter
from fhir_server.api.operations import Operation, Operations
from fhir_server.errors import bad_request

_REASON = parameter("reason", "in", "string", "why (on the Task; on the Provenance of a review)")
ANALYZE = own(
    "ImagingStudy-analyze", "analyze", "Analyze an imaging study with the AI models",
    "Queue the study's analyses by the AI worker: by `model`, or every model that takes the "
    "study. Answers a Parameters resource naming the Task of each analysis.",
    ["ImagingStudy"], instance=True, affects_state=True,
    parameters=[parameter("model", "in", "string", "the model to run (default: every model "
                          "that takes the study)"), _REASON,
                parameter("task", "out", "Reference", "the Task of each queued analysis",
                          0, "*")],
)  # fmt: skip


def _review_definition(approve: bool) -> dict[str, Any]:
    code = "approve" if approve else "reject"
    outcome = "final (approved)" if approve else "entered-in-error (rejected)"
    return own(
        f"DiagnosticReport-{code}", code, f"{code.capitalize()} an AI DiagnosticReport",
        f"A clinician's review of a preliminary AI DiagnosticReport: the report and its "
        f"Observations become {outcome}, with a Provenance naming the reviewer; answers the "
        "report as stored afterwards.",
        ["DiagnosticReport"], instance=True, affects_state=True,
        parameters=[parameter("reviewer", "in", "Reference", "the reviewer when authorization "
                              "is off (otherwise the token's user, a physician or radiologist)"),
                    parameter("reason", "in", "string", "why (on the Provenance)",
                              0 if approve else 1),
                    parameter("return", "out", "DiagnosticReport", "the updated report", 1)],
    )  # fmt: skip


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


def register(operations: Operations, service: AiService) -> None:
    def analyze(ctx: Context, req: FhirRequest, study_id: str) -> FhirResponse:
        ai.may_analyze(service, ctx.access)
        params = _parameters(req)
        return FhirResponse(200, fhirjson.dumps(ai.analyze(service, ctx.access, study_id, params)))

    def review(approve: bool) -> Callable[[Context, FhirRequest, str], FhirResponse]:
        def handler(ctx: Context, req: FhirRequest, report_id: str) -> FhirResponse:
            params = _parameters(req)
            updated = ai.review(ctx.store, ctx.access, ctx.actor, report_id, params, approve)
            return FhirResponse(200, updated.body, {"ETag": updated.etag})

        return handler

    operations.register(Operation("ImagingStudy", "$analyze", analyze, perm="r",
                                  definition=operations.define(ANALYZE)))  # fmt: skip
    for name, approve in (("$approve", True), ("$reject", False)):
        operations.register(
            Operation("DiagnosticReport", name, review(approve), perm="u",
                      definition=operations.define(_review_definition(approve)))
        )  # fmt: skip
