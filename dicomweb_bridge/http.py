"""Routes: /dicomweb/... (secured proxy, STOW-RS, admin deletion), /imaging/upload, and
Orthanc's deletion callback. Mounted by `interop.app.create_app` only when imaging is on.

What each needs (SMART scopes on ImagingStudy; with auth off everything is allowed):

| route                                  | needs                                             |
|----------------------------------------|---------------------------------------------------|
| GET/HEAD /dicomweb/ QIDO-RS searches   | `s`; confined tokens get only their studies       |
| GET/HEAD /dicomweb/studies/<uid>/...   | `r`; confined tokens only studies they can see    |
| POST /dicomweb/studies[/<uid>] STOW-RS | `c`; confined tokens store for their own patient  |
| POST /imaging/upload                   | `c`; the same rule as STOW-RS                     |
| DELETE /dicomweb/studies/<uid>/...     | `d`, unconfined (never a patient-confined token)  |
| POST /imaging/orthanc/deleted          | the shared callback token (no SMART token)        |

Every /dicomweb request is parsed first (`dicomweb_bridge.request`): access is decided on the
parsed study UID and the upstream URL is written from the parsed parts.
"""

from __future__ import annotations

import hmac
import logging
import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
from pydicom.dataset import Dataset
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicomweb_bridge import upload
from dicomweb_bridge.access import Caller, forbidden
from dicomweb_bridge.multipart import MultipartError, content_type_params, split
from dicomweb_bridge.pacs import DICOM_JSON, PacsError
from dicomweb_bridge.proxy import Upstream, forward_read, json_body, passthrough
from dicomweb_bridge.request import DicomwebRequest, parse, route_tail, uid
from dicomweb_bridge.runner import RECONCILE
from dicomweb_bridge.service import Bridge
from fhir_server.errors import FhirError
from mappers.dicom import MappingError

log = logging.getLogger("interop.imaging")
Handler = Callable[[Request], Awaitable[Response]]
RETRIEVE_URL = "00081190"
REFERENCED_SOP = "00081199"


def outcome(status: int, text: str, code: str = "invalid") -> Response:
    return FhirErrorResponse(FhirError(status, text, code))


def FhirErrorResponse(exc: FhirError) -> Response:  # noqa: N802 - reads like a response class
    return Response(orjson.dumps(exc.outcome()), exc.status, exc.headers,
                    media_type="application/fhir+json")  # fmt: skip


def guarded(handler: Handler, audit: Any = None, bridge: Bridge | None = None) -> Handler:
    """Every failure a client can cause becomes an OperationOutcome, never a 500; with the
    audit trail on, every request (refusals too) leaves an AuditEvent like a FHIR one."""

    async def run(request: Request) -> Response:
        try:
            response = await handler(request)
        except FhirError as exc:
            response = FhirErrorResponse(exc)
        except (PacsError, httpx.HTTPError) as exc:
            response = outcome(502, f"the PACS failed: {type(exc).__name__}: {exc}", "transient")
        except (MultipartError, MappingError) as exc:
            response = outcome(400, str(exc))
        if audit is not None and request.url.path != "/imaging/orthanc/deleted":
            await _audit(audit, bridge, request, response.status_code)
        return response

    return run


async def _audit(audit: Any, bridge: Bridge | None, request: Request, status: int) -> None:
    from fhir_server.store.audit import Interaction
    from smart_auth.agent import actor_for

    parsed: DicomwebRequest | None = getattr(request.state, "dicomweb", None)
    kind = {"POST": "create", "DELETE": "delete"}.get(request.method)
    if kind is None:
        kind = "search-type" if parsed is None or parsed.search else "read"
    study = parsed.study if parsed is not None else None
    known = await run_in_threadpool(bridge.state.study, study) if study and bridge else None
    res_id = known.resource_id if known else None  # the ImagingStudy, not the DICOM UID
    actor = actor_for(getattr(request.state, "grant", None),
                      request.client.host if request.client else None)  # fmt: skip
    event = Interaction(request.method, kind, "ImagingStudy", res_id, status, actor)
    try:
        if audit.is_urgent(event):
            await run_in_threadpool(audit.record, event)
        else:
            audit.record(event)
    except Exception:  # noqa: BLE001 - an audit failure must not fail the request
        log.exception("could not write the audit event")


def routes(app: Any, bridge: Bridge) -> list[Route]:
    reads, policy = app.state.fhir_reads, app.state.policy
    access_for = getattr(app.state, "access_for", None)
    upstream = Upstream(bridge.pacs.config, bridge.config.proxy_root)
    app.state.dicomweb_upstream = upstream

    audit = getattr(app.state, "audit", None)

    def caller(request: Request) -> Caller:
        who = Caller.of(reads, policy, access_for, request.headers.get("authorization"))
        request.state.grant = who.grant
        return who

    def write_patient(who: Caller, asked: str | None) -> str | None:
        """The patient an upload lands on: a confined token may only write for its own."""
        own = who.patient("c")
        if who.limited("c") and own is None:
            raise forbidden("a restricted token cannot upload images")
        if own is not None and asked not in (None, "", f"Patient/{own}"):
            raise forbidden(f"this access token may only upload for Patient/{own}")
        return f"Patient/{own}" if own is not None else (asked or None)

    def confined_guard(who: Caller, into: str | None) -> upload.Guard | None:
        """For a confined token: stored files may only add to a study that is new to the
        PACS or already its own (never into another patient's study UID)."""
        if not who.limited("c"):
            return None

        def check(study_uids: list[str]) -> None:
            for study_uid in study_uids:  # compared exactly below: only well-formed UIDs
                uid(study_uid, "study")
            if into is not None and any(u != into for u in study_uids):
                raise FhirError(400, f"STOW-RS to studies/{into} takes only that study's "
                                "instances")  # fmt: skip
            theirs = set(study_uids) - who.visible(study_uids)
            taken = [u for u in sorted(theirs) if bridge.pacs.has_study(u)]
            if taken:
                raise forbidden(f"study {taken[0]} lies outside what the access token may reach")

        return check

    def parsed(request: Request) -> DicomwebRequest:
        tail = route_tail(request.scope, request.path_params.get("path", ""))
        found = parse(request.method, tail, request.query_params.multi_items())
        request.state.dicomweb = found
        return found

    async def read(request: Request) -> Response:
        who = caller(request)
        return await forward_read(upstream, who, request, parsed(request))

    async def stow(request: Request) -> Response:
        who = caller(request)
        found = parsed(request)
        patient = write_patient(who, request.query_params.get("patient"))
        kind, params = content_type_params(request.headers.get("content-type", ""))
        if kind != "multipart/related" or "boundary" not in params:
            raise FhirError(415, "STOW-RS takes multipart/related; type=\"application/dicom\"",
                            "not-supported")  # fmt: skip
        if patient is None:  # nothing to rewrite: stream straight through, then sync
            resp = await upstream.open(request, found)
            if not resp.headers.get("content-type", "").startswith(
                (DICOM_JSON, "application/json")
            ):
                return passthrough(resp)
            data = await json_body(resp)
            for uid in _stowed_studies(data):
                await run_in_threadpool(bridge.syncer.sync_study, uid)
            return Response(upstream.rewrite(orjson.dumps(data)), resp.status_code,
                            media_type=DICOM_JSON)  # fmt: skip
        items: list[upload.Incoming] = []
        try:
            async for headers, part in split(request.stream(), params["boundary"]):
                name = headers.get("content-location") or f"part {len(items) + 1}"
                items.append(upload.Incoming(name, file=part))
            result = await run_in_threadpool(upload.store, bridge, reads, items, patient,
                                             guard=confined_guard(who, found.study))  # fmt: skip
        finally:
            for item in items:
                if item.file is not None:
                    item.file.close()
        return Response(orjson.dumps(_stow_response(result)), 200 if not result.failed else 202,
                        media_type=DICOM_JSON)  # fmt: skip

    async def upload_files(request: Request) -> Response:
        who = caller(request)
        form = await request.form(max_files=100_000, max_fields=100_000)
        patient = write_patient(who, _field(form.get("patient")))
        files = [f for f in form.getlist("file") + form.getlist("files")
                 if isinstance(f, UploadFile)]  # fmt: skip
        if not files:
            raise FhirError(400, "no files: send them as multipart/form-data fields named 'file'")
        groups = [str(g) for g in form.getlist("group")]
        grouping = _field(form.get("grouping")) in ("1", "true", "yes", "on") or bool(groups)
        items = []
        for index, f in enumerate(files):
            name = f.filename or f"file {index + 1}"
            group = groups[index] if index < len(groups) else posixpath.dirname(name)
            items.append(upload.Incoming(name, file=f.file, group=group))
        result = await run_in_threadpool(
            upload.store, bridge, reads, items, patient, _field(form.get("description")), grouping,
            confined_guard(who, None),
        )  # fmt: skip
        return JSONResponse(result.as_dict(), 201 if result.stored else 422)

    async def delete(request: Request) -> Response:
        who = caller(request)
        found = parsed(request)
        who.require_unconfined("d", "Deleting images")
        done = await run_in_threadpool(_delete, bridge, found)
        return JSONResponse(done)

    async def deleted_callback(request: Request) -> Response:
        token = bridge.config.orthanc_callback_token.get_secret_value()
        given = request.headers.get("authorization", "").partition(" ")[2].strip()
        if not token:
            raise FhirError(404, "the Orthanc deletion callback is not configured", "not-found")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise FhirError(401, "wrong or missing callback token", "login")
        try:
            body = orjson.loads(await request.body())
            level, orthanc_id = str(body["ResourceType"]), str(body["ID"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise FhirError(400, 'body must be {"ResourceType": ..., "ID": ...}') from None
        # Answer first: Orthanc runs Lua callbacks under its Lua lock, and our sync calls
        # back into Orthanc, whose request handling may need that same lock.
        return Response(status_code=204, background=BackgroundTask(_on_deleted, bridge, level,
                                                                   orthanc_id))  # fmt: skip

    return [
        Route("/imaging/upload", guarded(upload_files, audit, bridge), methods=["POST"]),
        Route("/imaging/orthanc/deleted", guarded(deleted_callback), methods=["POST"]),
        Route("/dicomweb/{path:path}", guarded(stow, audit, bridge), methods=["POST"]),
        Route("/dicomweb/{path:path}", guarded(read, audit, bridge), methods=["GET", "HEAD"]),
        Route("/dicomweb/{path:path}", guarded(delete, audit, bridge), methods=["DELETE"]),
    ]


def _field(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _stowed_studies(data: Any) -> list[str]:
    """Study UIDs named by the RetrieveURLs of a STOW-RS response."""
    out: list[str] = []
    items = data.get(REFERENCED_SOP, {}).get("Value", []) if isinstance(data, dict) else []
    for item in items:
        for url in item.get(RETRIEVE_URL, {}).get("Value", []):
            parts = str(url).split("/studies/", 1)
            if len(parts) == 2:
                uid = parts[1].split("/", 1)[0]
                if uid and uid not in out:
                    out.append(uid)
    return out


def _stow_response(result: upload.UploadResult) -> dict[str, Any]:
    ds = Dataset()
    ds.ReferencedSOPSequence = [_sop(s["sopInstanceUid"]) for s in result.stored]
    failed = []
    for f in result.failed:
        item = Dataset()
        item.FailureReason = 0xC000
        item.TextValue = f"{f['file']}: {f['reason']}"[:1024]
        failed.append(item)
    if failed:
        ds.FailedSOPSequence = failed
    out: dict[str, Any] = ds.to_json_dict()
    return out


def _sop(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    return item


def _delete(bridge: Bridge, found: DicomwebRequest) -> dict[str, Any]:
    """Remove from the PACS, then bring the ImagingStudy in line (gone if emptied)."""
    study_uid, level = str(found.study), found.level
    uid = found.instance or found.series or study_uid
    pacs = bridge.pacs
    if not pacs.is_orthanc:
        raise FhirError(501, "deleting needs Orthanc (INTEROP_ORTHANC_URL)", "not-supported")
    orthanc_id = pacs.orthanc_lookup(uid, level)
    if orthanc_id is None:
        raise FhirError(404, f"{level.lower()} {uid} is not in the PACS", "not-found")
    pacs.orthanc_delete(level, orthanc_id)
    result = bridge.syncer.sync_study(study_uid)
    return {"deleted": level, "uid": uid, "imagingStudy": result.outcome,
            "id": result.resource_id}  # fmt: skip


def _on_deleted(bridge: Bridge, level: str, orthanc_id: str) -> None:
    """Orthanc deleted something: a known study is re-synced (and so deleted); anything
    finer asks the sync thread for a reconciliation of instance counts."""
    if level == "Study":
        known = bridge.state.by_orthanc_id(orthanc_id)
        if known is not None:
            bridge.syncer.sync_study(known.study_uid)
            return
    bridge.state.set_cursor(RECONCILE, "1")
