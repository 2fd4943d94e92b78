"""Type-level writes on `{type}`: create (with If-None-Exist) and the conditional update,
delete and patch that find their target by a search."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_server.api.context import (
    Context,
    FhirRequest,
    FhirResponse,
    _allow,
    _allow_body,
    _allow_stored,
    _filters,
    _if_match,
    _parse_json,
    _respond_with,
)
from fhir_server.api.patch import patch
from fhir_server.errors import FhirError, bad_request, precondition_failed
from fhir_server.search.query import matching_ids


def create(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    resource = _parse_json(req)
    if isinstance(resource, dict) and resource.get("resourceType") not in (None, res_type):
        raise bad_request(
            f"resourceType '{resource.get('resourceType')}' "
            f"does not match the URL type '{res_type}'",
            ["resourceType"],
        )
    condition = req.header("if-none-exist")
    with ctx.write() as tx:
        _allow_body(ctx, tx, "c", resource)
        if condition:
            ids = tx.search_ids(
                res_type, parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True)
            )
            if len(ids) > 1:
                raise precondition_failed(
                    f"If-None-Exist '{condition}' matched {len(ids)} resources"
                )
            if ids:
                found = tx.current(res_type, ids[0])
                assert found is not None
                return _respond_with(req, 200, found[1], ctx.base_url, False)
        result = tx.create(resource)
    return _respond_with(req, 201, result.stored, ctx.base_url, True)


def conditional_update(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    resource = _parse_json(req)
    with ctx.write() as tx:
        ids = tx.search_ids(res_type, _filters(req.query))
        if len(ids) > 1:
            raise precondition_failed(f"The conditional update matched {len(ids)} resources")
        body_id = resource.get("id") if isinstance(resource, dict) else None
        target = ids[0] if ids else body_id if isinstance(body_id, str) else None
        if target:
            _allow_stored(ctx, tx, "u", res_type, target)
        _allow_body(ctx, tx, "u" if target else "c", resource)
        if ids:
            if body_id and body_id != ids[0]:
                raise bad_request(
                    f"The resource id '{body_id}' differs from the matched {res_type}/{ids[0]}",
                    ["id"],
                )
            resource["id"] = ids[0]
            result = tx.update(res_type, ids[0], resource, _if_match(req))
        elif body_id:
            result = tx.update(res_type, body_id, resource)
        else:
            result = tx.create(resource)
    return _respond_with(
        req, 201 if result.created else 200, result.stored, ctx.base_url, result.created
    )


def conditional_delete(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    with ctx.write() as tx:
        ids = tx.search_ids(res_type, _filters(req.query))
        if len(ids) > 1 and req.prefer("handling") != "lenient-multiple":
            raise precondition_failed(f"The conditional delete matched {len(ids)} resources")
        for res_id in ids:
            _allow_stored(ctx, tx, "d", res_type, res_id)
        for res_id in ids:
            tx.delete(res_type, res_id)
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
