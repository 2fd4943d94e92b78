"""The HTTP side of Bulk Data: kick-off, status polling, cancel, file download, upload.

`register` adds `$export`, `$import`, `$bulk-upload` and the status and file URLs this module
hands out (`$bulk-status/{job}`, `$bulk-file/{job}/{name}`) to the API's operation registry.
A job and its
files belong to the client that kicked it off: anyone else gets 404, as if it did not exist.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server import limits
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.api.definitions import own, parameter
from fhir_server.api.operations import Operation, Operations
from fhir_server.bulk.params import NDJSON_FORMATS, in_patient_compartment, parameters_items
from fhir_server.bulk.params import parse_export as parse_export_request
from fhir_server.clock import to_http_date
from fhir_server.errors import FhirError, bad_request, not_found, outcome_bytes
from fhir_server.search.registry import resource_types

if TYPE_CHECKING:
    from fhir_server.bulk.jobs import Job
    from fhir_server.bulk.service import BulkService

NDJSON = "application/fhir+ndjson"
MANIFEST_JSON = "application/json"
MAX_UPLOAD = 512 * 1024 * 1024
BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


def _definitions(operations: Operations) -> dict[str, str]:
    """This server's OperationDefinitions of Bulk Data's operations (derived, `base`, from
    the Bulk Data IG's where it has one), readable on the server; name -> canonical URL."""
    out = []
    text = "string"
    export_params = [
        parameter("_outputFormat", "in", text, "application/fhir+ndjson (the default) only"),
        parameter("_since", "in", "instant", "only resources changed after this instant"),
        parameter("_type", "in", text, "comma-separated resource types to export", 0, "*"),
        parameter("_typeFilter", "in", text, "a search per type, as Type?params", 0, "*"),
        parameter("_elements", "in", text, "elements to keep, as Type.element or element", 0, "*"),
    ]
    patient = parameter("patient", "in", "Reference", "only these patients' compartments", 0, "*")
    note = (
        " Kick-off only: answers 202 with Content-Location, the status URL "
        "($bulk-status/{job}) that gives the manifest when the job is done."
    )
    for op_id, code, resources, level, params, base, what in (
        ("bulk-export", "export", [], "system", export_params, "export",
         "Export every resource the client may read at system level, as NDJSON files."),
        ("Patient-bulk-export", "export", ["Patient"], "type", [*export_params, patient],
         "patient-export", "Export the resources of every patient's compartment."),
        ("Group-bulk-export", "export", ["Group"], "instance", [*export_params, patient],
         "group-export", "Export the compartments of the group's member patients."),
        ("bulk-import", "import", [], "system",
         [parameter("inputFormat", "in", "code", "application/fhir+ndjson"),
          parameter("input", "in", None, "an NDJSON file to load", 1, "*",
                    [parameter("type", "in", "code", "its resource type"),
                     parameter("url", "in", "url", "where to fetch it (http or https)", 1)])],
         None, "Load NDJSON files by URL (create or update by id); a Parameters resource or "
               "a JSON manifest of {type, url} inputs."),
    ):  # fmt: skip
        definition = own(
            op_id, code, f"Bulk Data ${code}", what + note, resources,
            system=level == "system", type_level=level == "type",
            instance=level == "instance", affects_state=code == "import",
            parameters=params, base=BULK + base if base else None,
        )  # fmt: skip
        out.append((op_id, operations.define(definition)))
    return dict(out)


def register(operations: Operations, service: BulkService) -> None:
    """Bulk Data's operations and the status and file URLs it hands out."""
    both, get = frozenset({"GET", "POST"}), frozenset({"GET"})
    post, delete = frozenset({"POST"}), frozenset({"DELETE"})
    urls = _definitions(operations)
    for op in (
        Operation("", "$export", partial(_export, service, "system"), both, "",
                  urls["bulk-export"], level="system"),
        Operation("Patient", "$export", partial(_export, service, "patient"), both, "",
                  urls["Patient-bulk-export"], level="type"),
        Operation("Group", "$export", partial(_export, service, "group"), both, "",
                  urls["Group-bulk-export"]),
        Operation("", "$import", partial(kick_off_import, service=service), post, "",
                  urls["bulk-import"], level="system"),
        Operation("", "$bulk-upload", partial(upload, service=service), post, "", level="system",
                  listed=False),
        Operation("", "$bulk-status", partial(status, service=service), get, "", level="system",
                  tail=("job",), listed=False),
        Operation("", "$bulk-status", partial(cancel, service=service), delete, "",
                  level="system", tail=("job",), listed=False),
        Operation("", "$bulk-file", partial(download, service=service), get, "", level="system",
                  tail=("job", "name"), listed=False),
    ):  # fmt: skip
        operations.register(op)


def _export(
    service: BulkService, level: str, ctx: Context, req: FhirRequest, group_id: str | None = None
) -> FhirResponse:
    return kick_off_export(ctx, service, req, level, group_id)


def _owner(ctx: Context) -> str:
    return ctx.access.requester() if ctx.access is not None else ""


def _request_url(ctx: Context, req: FhirRequest, path: list[str]) -> str:
    from urllib.parse import urlencode

    url = f"{ctx.base_url}/{'/'.join(path)}"
    return url + ("?" + urlencode(req.query) if req.query else "")


def _require_async(req: FhirRequest, lenient: bool) -> None:
    prefer = (req.header("prefer") or "").replace(" ", "").lower()
    asked = "respond-async" in prefer.replace(";", ",").split(",")
    if not asked and not lenient:
        raise bad_request("Bulk Data kick-off needs the header Prefer: respond-async")
    accept = (req.header("accept") or "application/fhir+json").lower()
    if not any(t in accept for t in ("application/fhir+json", "application/json", "*/*")):
        raise FhirError(406, "Bulk Data kick-off answers application/fhir+json", "not-supported")


def _lenient(req: FhirRequest) -> bool:
    return "handling=lenient" in (req.header("prefer") or "").replace(" ", "").lower()


def _accepted(ctx: Context, service: BulkService, job: Job) -> FhirResponse:

    service.submit(job.job_id)
    location = f"{ctx.base_url}/$bulk-status/{job.job_id}"
    return FhirResponse(202, None, {"Content-Location": location})


# -- $export -------------------------------------------------------------------------------------


def kick_off_export(
    ctx: Context, service: BulkService, req: FhirRequest, level: str, group_id: str | None
) -> FhirResponse:

    method = req.method.upper()
    lenient = _lenient(req)
    _require_async(req, lenient)
    items = [(k, v) for k, v in req.query if k not in ("_format", "_pretty")]
    if method == "POST":
        items += parameters_items(_parse_json(req))
    request = parse_export_request(level, group_id, items, ctx.base_url, lenient)
    if level == "group":
        assert group_id is not None
        stored = ctx.store.read("Group", group_id)
        if stored is None or stored.deleted:
            raise not_found(f"Group/{group_id} is not known")
    if ctx.access is not None:
        if request.types is None:
            request.types = _readable_types(ctx, level)
        for res_type in request.types:
            ctx.access.require_system("r", res_type, "Bulk export")
        if level == "group":
            ctx.access.require_system("r", "Group", "Bulk export")
    path = [p for p in req.path if p]
    job = service.jobs.create(
        "export", _owner(ctx), _request_url(ctx, req, path), request.to_json()
    )
    return _accepted(ctx, service, job)


def _readable_types(ctx: Context, level: str) -> list[str]:
    """With no `_type`, every type the client may read at system level (none: refused)."""
    assert ctx.access is not None
    types = []
    for res_type in sorted(resource_types()):
        if level != "system" and not in_patient_compartment(res_type):
            continue
        try:
            ctx.access.require_system("r", res_type, "Bulk export")
        except FhirError:
            continue
        types.append(res_type)
    if not types:
        ctx.access.require_system("r", "*", "Bulk export")  # raises the 403 with the scopes
    return types


# -- status, cancel, files -------------------------------------------------------------------------


def _own_job(ctx: Context, service: BulkService, job_id: str) -> Job:
    job = service.jobs.get(job_id)
    if job is None or job.owner != _owner(ctx) or job.kind == "upload":
        raise not_found(f"No bulk job '{job_id}' (it may have expired or been cancelled)")
    if job.status == "cancelled":
        raise not_found(f"Bulk job '{job_id}' was cancelled")
    return job


def status(ctx: Context, req: FhirRequest, job_id: str, *, service: BulkService) -> FhirResponse:

    job = _own_job(ctx, service, job_id)
    retry = str(service.jobs.config.retry_after)
    if job.status in ("accepted", "running"):
        headers = {"X-Progress": job.progress or job.status, "Retry-After": retry}
        return FhirResponse(202, None, headers)
    if job.status == "failed":
        raise FhirError(500, f"The bulk {job.kind} failed: {job.result}", "exception")
    headers = {"Expires": to_http_date(job.expires)} if job.expires else {}
    response = FhirResponse(200, (job.result or "{}").encode(), headers)
    response.media_type = MANIFEST_JSON
    return response


def cancel(ctx: Context, req: FhirRequest, job_id: str, *, service: BulkService) -> FhirResponse:

    job = _own_job(ctx, service, job_id)
    service.jobs.cancel(job.job_id)
    if job.status != "running":  # a running job removes its own files when it notices
        service.jobs.cleanup()
    return FhirResponse(202, outcome_bytes(f"Bulk {job.kind} {job_id} cancelled"))


def download(
    ctx: Context, req: FhirRequest, job_id: str, name: str, *, service: BulkService
) -> FhirResponse:

    job = service.jobs.get(job_id)
    if job is None or job.owner != _owner(ctx) or job.status != "completed":
        raise not_found(f"No bulk file {job_id}/{name} for this client")
    path = service.jobs.directory(job_id) / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise not_found(f"No bulk file {job_id}/{name}")
    response = FhirResponse(200, None, {"Content-Length": str(path.stat().st_size)})
    response.stream = _chunks(path)
    response.media_type = NDJSON
    return response


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


# -- $import ---------------------------------------------------------------------------------------


def kick_off_import(ctx: Context, req: FhirRequest, *, service: BulkService) -> FhirResponse:

    _require_async(req, _lenient(req))
    inputs = import_inputs(_parse_json(req))
    if ctx.access is not None:
        for res_type in {i["type"] for i in inputs if i["type"]}:
            ctx.access.require_system("c", res_type, "Bulk import")
            ctx.access.require_system("u", res_type, "Bulk import")
        if any(not i["type"] for i in inputs):
            ctx.access.require_system("c", "*", "Bulk import of inputs without a type")
            ctx.access.require_system("u", "*", "Bulk import of inputs without a type")
    url = f"{ctx.base_url}/$import"
    job = service.jobs.create("import", _owner(ctx), url, {"input": inputs})
    return _accepted(ctx, service, job)


def require_import(ctx: Context, why: str) -> None:
    """Files to import are for clients that may import: a `system/` scope granting create and
    update, without query limits, on at least one type (`$import` then checks each type)."""
    if ctx.access is None:
        return
    for res_type in ("*", *sorted(resource_types())):
        try:
            ctx.access.require_system("c", res_type, why)
            ctx.access.require_system("u", res_type, why)
            return
        except FhirError:
            continue
    ctx.access.require_system("c", "*", why)  # raises the 403 naming the caller's scopes
    ctx.access.require_system("u", "*", why)


def import_inputs(body: Any) -> list[dict[str, str | None]]:
    """The inputs of a Bulk Data import request: a Parameters resource (`inputFormat`,
    `inputSource`, `input` parts `type` and `url`) or a JSON manifest with `input` (or an
    export manifest's `output`) entries of `type` and `url`."""
    if not isinstance(body, dict):
        raise bad_request("$import takes a Parameters resource or a JSON import manifest")
    raw: list[tuple[Any, Any]] = []
    fmt: Any = None
    if body.get("resourceType") == "Parameters":
        for param in body.get("parameter") or []:
            if not isinstance(param, dict):
                continue
            if param.get("name") == "inputFormat":
                fmt = param.get("valueCode") or param.get("valueString")
            if param.get("name") == "input":
                parts = {
                    p.get("name"): next((v for k, v in p.items() if k.startswith("value")), None)
                    for p in param.get("part") or []
                    if isinstance(p, dict)
                }
                raw.append((parts.get("type"), parts.get("url")))
    else:
        fmt = body.get("inputFormat")
        entries = body.get("input", body.get("output"))
        if not isinstance(entries, list):
            raise bad_request("The import manifest needs an 'input' list of {type, url}")
        raw = [(e.get("type"), e.get("url")) for e in entries if isinstance(e, dict)]
    if fmt is not None and fmt not in NDJSON_FORMATS:
        raise FhirError(400, f"inputFormat '{fmt}' is not supported; use {NDJSON}", "not-supported")
    if not raw:
        raise bad_request("The import request names no input files")
    inputs: list[dict[str, str | None]] = []
    for index, (res_type, url) in enumerate(raw):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad_request(f"input[{index}].url must be an http(s) URL, not {url!r}")
        if res_type is not None and res_type not in resource_types():
            raise bad_request(f"input[{index}].type '{res_type}' is not a resource type")
        inputs.append({"type": res_type, "url": url})
    return inputs


def upload(ctx: Context, req: FhirRequest, *, service: BulkService) -> FhirResponse:
    """Keep an NDJSON body as a file `$import` can name: 201 with its URL in Location."""

    require_import(ctx, "Bulk upload")
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type not in NDJSON_FORMATS:
        raise FhirError(415, f"Upload NDJSON as {NDJSON}, not '{content_type}'", "not-supported")
    source = req.body_file  # streamed to a file within INTEROP_MAX_UPLOAD_MB (fhir_server.limits)
    if source is None:
        if len(req.body) > MAX_UPLOAD:
            raise FhirError(413, f"An upload may hold at most {MAX_UPLOAD} bytes", "too-costly")
        source = io.BytesIO(req.body)
    if all(not chunk.strip() for chunk in iter(lambda: source.read(1 << 16), b"")):
        raise bad_request("The upload is empty")
    source.seek(0)
    job = service.jobs.create("upload", _owner(ctx), f"{ctx.base_url}/$bulk-upload", {})
    directory = service.jobs.directory(job.job_id)
    directory.mkdir(parents=True, exist_ok=True)
    limits.copy_to(source, directory / "upload.ndjson")
    service.jobs.claim(job.job_id)
    service.jobs.finish(job.job_id, "completed", {"upload": True})
    url = f"{ctx.base_url}/$bulk-file/{job.job_id}/upload.ndjson"
    response = FhirResponse(201, outcome_bytes(f"Stored as {url}"), {"Location": url})
    return response


def manifest_of(job: Job) -> dict[str, Any]:
    return dict(orjson.loads(job.result or "{}"))
