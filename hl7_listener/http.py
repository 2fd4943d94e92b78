"""Operator endpoints under /hl7: list, inspect and submit messages (same rules as MLLP).

Raw messages are PHI of every patient they name, so these are operator surfaces: reading needs
a user with role admin or operator (through a `user/` scope with `r`) or the operator-granted
scope `system/hl7.read`; submitting (which creates resources) needs `c` or `system/hl7.write`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.errors import FhirError
from hl7_listener.inbox import parse_time
from hl7_listener.processor import Processor
from mappers.hl7v2 import ParseError, parse
from smart_auth.policy import Surface

HL7_READ_SCOPE = "system/hl7.read"
HL7_WRITE_SCOPE = "system/hl7.write"
INBOX = Surface("The HL7 inbox", "r", HL7_READ_SCOPE)
SUBMISSION = Surface("HL7 message submission (and replay)", "c", HL7_WRITE_SCOPE)


def routes(processor: Processor, policy: Any) -> list[Route]:
    """Routes guarded by the same AccessPolicy as /fhir, so they are not open by default."""

    def guard(request: Request, surface: Surface = INBOX) -> Response | None:
        try:
            policy.require(surface, request.headers.get("authorization"))
        except FhirError as exc:
            return Response(orjson.dumps(exc.outcome()), exc.status, exc.headers,
                            media_type="application/fhir+json")  # fmt: skip
        return None

    def js(data: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(data), status, media_type="application/json")

    async def list_messages(request: Request) -> Response:
        denied = guard(request)
        if denied:
            return denied
        q = request.query_params
        try:
            limit = min(max(int(q.get("_count", "50")), 1), 1000)
            offset = max(int(q.get("_offset", "0")), 0)
        except ValueError:
            return js({"error": "_count and _offset must be integers"}, 400)
        try:
            since, until = (parse_time(q[k]) if q.get(k) else None for k in ("since", "until"))
        except ValueError:
            return js({"error": "since and until take an ISO date or date-time"}, 400)
        rows = await run_in_threadpool(
            processor.inbox.list, q.get("status"), q.get("type"), q.get("sender"), limit, offset,
            since, until, False, None, q.get("control"),
        )  # fmt: skip
        return js({"messages": [r.as_dict() for r in rows], "offset": offset, "count": limit})

    async def show_message(request: Request) -> Response:
        denied = guard(request)
        if denied:
            return denied
        try:
            pk = int(request.path_params["id"])
        except ValueError:
            return js({"error": "id must be an integer"}, 404)
        row = await run_in_threadpool(processor.inbox.get, pk)
        if row is None:
            return js({"error": f"no message {pk}"}, 404)
        out = row.as_dict()
        out["raw"] = row.raw.decode("latin-1")
        out["ack"] = (row.ack or b"").decode("latin-1")
        try:
            out["segments"] = [s.fields for s in parse(row.raw).segments]
        except ParseError:
            out["segments"] = []
        return js(out)

    async def submit(request: Request) -> Response:
        denied = guard(request, SUBMISSION)
        if denied:
            return denied
        raw = await request.body()
        reply = await run_in_threadpool(processor.handle, raw, "http")
        ack = reply.ack
        if reply.followup is not None:  # enhanced mode: the application ACK, when one is due
            ack = await run_in_threadpool(reply.followup) or ack
        status = 201 if reply.pk is not None else 503
        return Response(ack or b"", status, {"X-Message-Id": str(reply.pk or "")},
                        media_type="x-application/hl7-v2+er7")  # fmt: skip

    return [
        Route("/hl7/messages", list_messages, methods=["GET"]),
        Route("/hl7/messages", submit, methods=["POST"]),
        Route("/hl7/messages/{id}", show_message, methods=["GET"]),
    ]
