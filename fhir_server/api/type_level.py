"""Type-level writes on `{type}`: create (with If-None-Exist) and the conditional update,
delete and patch that find their target by a search."""

from __future__ import annotations

from fhir_server.api.context import (
    Context,
    FhirRequest,
    FhirResponse,
    _allow,
    _filters,
    _if_match,
    _parse_json,
    _store_write,
    _written,
)
from fhir_server.api.patch import patch
from fhir_server.errors import FhirError, bad_request
from fhir_server.search.query import matching_ids
from fhir_server.store.apply import Entry


def create(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    resource = _parse_json(req)
    if isinstance(resource, dict) and resource.get("resourceType") not in (None, res_type):
        raise bad_request(
            f"resourceType '{resource.get('resourceType')}' "
            f"does not match the URL type '{res_type}'",
            ["resourceType"],
        )
    if not isinstance(resource, dict):
        raise bad_request("The body must be a FHIR resource (a JSON object)")
    entry = Entry("POST", res_type, resource=resource, checked=True)  # body limits checked
    entry.if_none_exist = req.header("if-none-exist") or None
    return _written(ctx, req, _store_write(ctx, entry))


def conditional_update(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    resource = _parse_json(req)
    if not isinstance(resource, dict):
        raise bad_request("The body must be a FHIR resource (a JSON object)")
    entry = Entry("PUT", res_type, None, _filters(req.query), resource, if_match=_if_match(req))
    entry.checked = True  # _parse_json checked the body's limits
    entry.strict_id = True
    return _written(ctx, req, _store_write(ctx, entry))


def conditional_delete(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    entry = Entry("DELETE", res_type, None, _filters(req.query))
    entry.all_matches = req.prefer("handling") == "lenient-multiple"
    _store_write(ctx, entry)
    return FhirResponse(204)


def conditional_patch(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    narrow = ctx.access.visible_conditions if ctx.access is not None else None
    with ctx.read_connection() as conn:
        ids = matching_ids(conn, res_type, _filters(req.query), ctx.base_url, narrow)
    if len(ids) != 1:
        raise FhirError(
            412 if ids else 404,
            f"The conditional patch matched {len(ids)} resources",
            "not-found" if not ids else "multiple-matches",
        )
    _allow(ctx, "u", res_type, ids[0])
    return patch(ctx, req, res_type, ids[0])
