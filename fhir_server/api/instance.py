"""Instance-level interactions on `{type}/{id}`: read, vread, update and delete (patch is in
`patch`). Moved verbatim from the old `interactions` module."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.context import (
    Context,
    FhirRequest,
    FhirResponse,
    _if_match,
    _parse_json,
    _read_current,
    _resource_headers,
    _store_write,
    _written,
)
from fhir_server.errors import FhirError, bad_request, gone, not_found
from fhir_server.store.apply import Entry


def read(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    stored = _read_current(ctx, res_type, res_id)
    headers = _resource_headers(stored, ctx.base_url)
    headers.pop("Content-Location")
    none_match = req.header("if-none-match")
    if none_match and none_match.strip() in (stored.etag, f'"{stored.version_id}"'):
        return FhirResponse(304, None, headers)
    summary = dict(req.query).get("_summary")
    elements = dict(req.query).get("_elements")
    body = stored.body or b""
    if summary or elements:
        body = bundling.shape(body, summary, elements.split(",") if elements else None)
    return FhirResponse(200, body, headers)


def vread(ctx: Context, req: FhirRequest, res_type: str, res_id: str, vid: str) -> FhirResponse:
    try:
        version_id = limits.parse_int("version", vid, 1)
    except FhirError:
        raise not_found(f"Version '{vid[:64]}' of {res_type}/{res_id} is not known") from None
    stored = ctx.store.vread(res_type, res_id, version_id)
    if stored is None:
        raise not_found(f"Version {vid} of {res_type}/{res_id} is not known")
    if stored.deleted:
        raise gone(f"Version {vid} of {res_type}/{res_id} is a deletion")
    return FhirResponse(200, stored.body, _resource_headers(stored, ctx.base_url))


def update(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    resource = _parse_json(req)
    if not isinstance(resource, dict):
        raise bad_request("The body must be a FHIR resource (a JSON object)")
    entry = Entry("PUT", res_type, res_id, resource=resource, if_match=_if_match(req))
    entry.checked = True  # _parse_json checked the body's limits
    return _written(ctx, req, _store_write(ctx, entry))


def delete(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    result = _store_write(ctx, Entry("DELETE", res_type, res_id))
    headers = {"ETag": result.stored.etag} if result.stored else {}
    return FhirResponse(204, None, headers)
