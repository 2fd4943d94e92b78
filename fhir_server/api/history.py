"""History at system, type and instance level (`_history`), paged like a search."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse
from fhir_server.errors import bad_request, not_found
from fhir_server.search.extract import date_range
from fhir_server.store.repository import history_rows


def history(
    ctx: Context, req: FhirRequest, res_type: str | None, res_id: str | None
) -> FhirResponse:
    params = dict(req.query)
    since = _instant_param(params, "_since")
    at = _instant_param(params, "_at")
    count = limits.parse_int("_count", params.get("_count", str(ctx.default_count)))
    count = min(count, ctx.max_count)
    offset = limits.parse_int("_offset", params.get("_offset", "0"))
    where = ctx.access.history_conditions(res_type) if ctx.access and res_id is None else []
    with ctx.read_connection() as conn, limits.deadline():
        total, versions = history_rows(conn, res_type, res_id, since, at, count, offset, where)
    if res_id and total == 0:
        raise not_found(f"{res_type}/{res_id} is not known")
    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    kept = [(k, v) for k, v in req.query if k in ("_since", "_at")]
    links = bundling.page_links(ctx.base_url, path, kept, count, offset, total, len(versions))
    entries = [bundling.history_entry(ctx.base_url, v) for v in versions]
    return FhirResponse(200, bundling.bundle_bytes("history", entries, total, links))


def _instant_param(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        low, high = date_range(value)
    except ValueError:
        raise bad_request(f"{name} must be a FHIR instant, not '{value}'") from None
    return low if name == "_since" else high - 1


def system(ctx: Context, req: FhirRequest) -> FhirResponse:
    return history(ctx, req, None, None)


def type_history(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    return history(ctx, req, res_type, None)
