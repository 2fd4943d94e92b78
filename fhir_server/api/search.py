"""Search: `GET {type}`, `POST {type}/_search` and the compartment searches, answered as a
searchset Bundle narrowed to what the caller may see."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_server import fhirjson
from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _filters
from fhir_server.errors import FhirError
from fhir_server.search.query import (
    SearchPlan,
    SearchResult,
    compartment_condition,
    execute,
    execute_direct,
)


def search(
    ctx: Context,
    req: FhirRequest,
    res_type: str,
    compartment: str | None = None,
    form: bytes | None = None,
) -> FhirResponse:
    fetched = ctx.fetched
    if fetched is not None and fetched.request is req and fetched.plan is not None:
        return _searchset(ctx, fetched.plan, res_type, fetched.page)  # planned by the caller
    plan, path = search_plan(ctx, req, res_type, compartment, form)
    return _searchset(ctx, plan, path)


def search_plan(
    ctx: Context,
    req: FhirRequest,
    res_type: str,
    compartment: str | None = None,
    form: bytes | None = None,
) -> tuple[SearchPlan, str]:
    """The compiled search, narrowed to what the caller may see, and its Bundle's path."""
    query = _filters(req.query)
    if form:
        query += parse_qsl(form.decode("utf-8", "replace"), keep_blank_values=True)
    compiler = ctx.compiler(strict=req.prefer("handling") == "strict")
    plan = compiler.compile(res_type, query, direct=True)
    if ctx.access is not None:
        plan.where.extend(ctx.access.search_conditions(res_type))
    path = res_type
    if compartment is not None:
        plan.where.append(compartment_condition(compartment, res_type))
        path = f"Patient/{compartment}/{res_type}"
    return plan, path


def _searchset(
    ctx: Context, plan: SearchPlan, path: str, result: SearchResult | None = None
) -> FhirResponse:
    direct = plan.direct is not None and not plan.where and ctx.tx is None
    if result is None and direct:  # SQL text: on the DBAPI connection
        with ctx.store.dbapi_connection() as dbapi:
            result = execute_direct(dbapi, ctx.store.engine.dialect.paramstyle, plan)
    if result is None:
        with ctx.read_connection() as conn:
            result = execute(conn, plan)
            if ctx.access is not None and result.included:
                result.included = ctx.access.filter_rows(conn, result.included)
    entries = [
        bundling.search_entry(
            ctx.base_url, row, bundling.shape(row.body, plan.summary, plan.elements)
        )
        for row in result.rows
    ]
    entries += [bundling.search_entry(ctx.base_url, row, row.body) for row in result.included]
    if plan.ignored:
        from fhir_server.errors import operation_outcome

        note = operation_outcome(
            "Ignored unknown or unsupported search parameters: " + ", ".join(plan.ignored),
            "not-supported",
            "warning",
        )
        entries.append(b'{"resource":' + fhirjson.dumps(note) + b',"search":{"mode":"outcome"}}')
    links = bundling.page_links(
        ctx.base_url, path, plan.applied, plan.count, plan.offset, result.total, len(result.rows)
    )
    return FhirResponse(200, bundling.bundle_bytes("searchset", entries, result.total, links))


def search_form(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    """`POST {type}/_search`: the parameters in a form body, added to those in the URL."""
    return search(ctx, req, res_type, form=req.body)


def form_only(req: FhirRequest) -> None:
    """POST _search takes only a form body (checked before the access policy is asked)."""
    content_type = (
        (req.header("content-type") or "application/x-www-form-urlencoded").split(";")[0].strip()
    )
    if content_type != "application/x-www-form-urlencoded":
        raise FhirError(
            415, "POST _search takes an application/x-www-form-urlencoded body", "not-supported"
        )
