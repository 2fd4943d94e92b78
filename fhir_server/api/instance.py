"""Instance-level interactions on `{type}/{id}`: read, vread, update and delete (patch is in
`patch`). Moved verbatim from the old `interactions` module."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.context import (
    Context,
    FhirRequest,
    FhirResponse,
    _allow_body,
    _if_match,
    _parse_json,
    _read_current,
    _resource_headers,
    _respond_with,
)
from fhir_server.errors import FhirError, gone, not_found


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
    with ctx.write() as tx:
        _allow_body(ctx, tx, "c" if req.creates else "u", resource)
        result = tx.update(res_type, res_id, resource, _if_match(req))
    return _respond_with(
        req, 201 if result.created else 200, result.stored, ctx.base_url, result.created
    )


def delete(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    with ctx.write() as tx:
        stored = tx.delete(res_type, res_id)
    headers = {"ETag": stored.etag} if stored else {}
    return FhirResponse(204, None, headers)
