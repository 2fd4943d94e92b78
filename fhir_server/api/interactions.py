"""The RESTful interaction table: one small function per interaction, one dispatcher.

A REST call and an entry of a batch/transaction Bundle are both a `FhirRequest` and go through
`dispatch`, so they share one code path; every failure is a `FhirError`, rendered as an
OperationOutcome in one place (the ASGI app, or the Bundle response entry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import orjson
from sqlalchemy import Connection

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.operations import Operations
from fhir_server.clock import to_http_date
from fhir_server.errors import FhirError, bad_request, gone, not_found
from fhir_server.search.extract import date_range
from fhir_server.search.query import (
    Compiler,
    Row,
    SearchPlan,
    compartment_condition,
    everything_rows,
    execute,
    matching_ids,
)
from fhir_server.search.registry import patient_compartment, resource_types
from fhir_server.store.apply import Entry, EntryResult
from fhir_server.store.audit import Actor
from fhir_server.store.models import resources
from fhir_server.store.patch import apply_patch as apply_patch
from fhir_server.store.repository import Store, StoredResource, Transaction, history_rows

if TYPE_CHECKING:
    from fhir_server.api.access import Access
    from fhir_server.bulk.service import BulkService
    from fhir_server.subscriptions.service import SubscriptionService

R = resources.c
FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


@dataclass(slots=True)
class FhirRequest:
    method: str
    path: list[str]
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parsed: Any = None  # a body already parsed (Bundle entries)
    existing_id: str | None = None  # a transaction's conditional create that matched
    creates: bool = False  # a transaction's create, turned into a PUT to a fresh id
    body_file: IO[bytes] | None = None  # a `$bulk-upload` body, streamed to a file

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def prefer(self, key: str) -> str | None:
        for part in (self.headers.get("prefer") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k.strip() == key:
                return v.strip().strip('"')
        return None


@dataclass(slots=True)
class FhirResponse:
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resource: dict[str, Any] | None = None  # set when a Bundle entry needs the parsed resource
    interaction: str = ""
    res_type: str = ""
    stream: Iterable[bytes] | None = None  # a large body (bulk files) sent chunk by chunk
    media_type: str | None = None  # when not application/fhir+json


@dataclass
class Context:
    """What interactions need: the store, the FHIR base URL and page-size settings."""

    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    tx: Transaction | None = None
    access: Access | None = None  # the caller's authorization (fhir_server.api.access)
    bulk: BulkService | None = None  # $export / $import jobs (fhir_server.bulk)
    subscriptions: SubscriptionService | None = None  # checks and owners of Subscriptions
    # called inside each write transaction just before it commits (the audit trail records
    # the change in the same transaction, so no change is ever without its AuditEvent)
    before_commit: Callable[[Transaction], None] | None = None
    operations: Operations = field(default_factory=Operations)  # registered $operations
    actor: Actor | None = None  # who makes this request's changes (the audit trail's agent)

    def compiler(self, strict: bool = False) -> Compiler:
        narrow = self.access.visible_conditions if self.access is not None else None
        return Compiler(self.base_url, strict, self.default_count, self.max_count, narrow)

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """The surrounding Bundle transaction, or a new one for a single REST write."""
        if self.tx is not None:
            yield self.tx
        else:
            with self.transaction() as tx:
                yield tx

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A new store transaction that runs `before_commit` when its block succeeds; its
        conditional searches see only what the caller may see."""
        narrow = self.access.visible_conditions if self.access is not None else None
        with self.store.transaction(self.actor, None, narrow, self.before_commit) as tx:
            yield tx

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """Inside a Bundle transaction, reads must see its own (flushed) writes."""
        if self.tx is not None:
            self.tx.flush()
            yield self.tx.conn
        else:
            with self.store.connection() as conn:
                yield conn


# -- helpers ------------------------------------------------------------------------------------


def _resource_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": to_http_date(stored.last_updated),
        "Content-Location": f"{base_url}/{stored.location}",
    }


def _respond_with(
    req: FhirRequest, status: int, stored: StoredResource, base_url: str, location: bool
) -> FhirResponse:
    headers = _resource_headers(stored, base_url)
    if location:
        headers["Location"] = f"{base_url}/{stored.location}"
    prefer = req.prefer("return")
    if prefer == "minimal":
        return FhirResponse(status, None, headers)
    if prefer == "OperationOutcome":
        return FhirResponse(
            status, bundling_outcome(f"{stored.res_type}/{stored.res_id} stored"), headers
        )
    return FhirResponse(status, stored.body, headers)


def bundling_outcome(text: str) -> bytes:
    from fhir_server.errors import outcome_bytes

    return outcome_bytes(text)


def _parse_json(req: FhirRequest) -> Any:
    if req.parsed is not None:
        return req.parsed
    content_type = (
        (req.header("content-type") or "application/fhir+json").split(";")[0].strip().lower()
    )
    if content_type not in JSON_TYPES:
        raise FhirError(
            415,
            f"Unsupported media type '{content_type}'; send application/fhir+json",
            "not-supported",
        )
    if not req.body.strip():
        raise bad_request("The request has no body; a FHIR resource was expected")
    return limits.parse_json(req.body)


def _check_type(res_type: str) -> None:
    if res_type not in resource_types():
        raise FhirError(404, f"Unknown resource type '{res_type}'", "not-supported")


def _if_match(req: FhirRequest) -> int | None:
    value = req.header("if-match")
    if not value:
        return None
    digits = value.strip().removeprefix("W/").strip('"')
    try:
        return int(digits)
    except ValueError:
        raise bad_request(f"If-Match must be an ETag like W/\"3\", not '{value}'") from None


def _filters(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query if k not in ("_format", "_pretty")]


def _read_current(ctx: Context, res_type: str, res_id: str) -> StoredResource:
    if ctx.tx is not None:
        found = ctx.tx.current(res_type, res_id)
        stored = found[1] if found else None
    else:
        stored = ctx.store.read(res_type, res_id)
    if stored is None:
        raise not_found(f"{res_type}/{res_id} is not known")
    if stored.deleted:
        raise FhirError(
            410, f"{res_type}/{res_id} was deleted", "deleted", headers={"ETag": stored.etag}
        )
    return stored


def _allow(ctx: Context, perm: str, res_type: str, res_id: str | None = None) -> None:
    """Ask the access policy (when there is one) before an interaction touches anything."""
    if ctx.access is None:
        return
    ctx.access.require(perm, res_type)
    if res_id is not None:
        with ctx.read_connection() as conn:
            ctx.access.check_stored(conn, perm, res_type, res_id)


def _store_write(ctx: Context, entry: Entry) -> EntryResult:
    """A REST write through the store's one write path (inside a surrounding transaction
    when there is one), with this request's policy and agent."""
    return ctx.store.write(entry, ctx.actor, ctx.access, ctx.before_commit, ctx.tx)


def _written(ctx: Context, req: FhirRequest, result: EntryResult) -> FhirResponse:
    assert result.stored is not None
    created = result.outcome == "created"
    return _respond_with(req, result.status, result.stored, ctx.base_url, created)


# -- instance level ----------------------------------------------------------------------------


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
    return _written(ctx, req, _store_write(ctx, entry))


def patch(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if req.parsed is not None:
        content_type = "application/json-patch+json"  # Bundle entries carry a Binary/JSON Patch
    if content_type not in PATCH_TYPES:
        raise FhirError(
            415,
            f"Unsupported patch media type '{content_type}'; use application/json-patch+json "
            "or application/merge-patch+json",
            "not-supported",
        )
    document = req.parsed if req.parsed is not None else limits.parse_json(req.body)
    entry = Entry("PATCH", res_type, res_id, resource=document, if_match=_if_match(req))
    entry.patch_type = content_type
    return _written(ctx, req, _store_write(ctx, entry))


def delete(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    result = _store_write(ctx, Entry("DELETE", res_type, res_id))
    headers = {"ETag": result.stored.etag} if result.stored else {}
    return FhirResponse(204, None, headers)


# -- type level ----------------------------------------------------------------------------------


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
    entry = Entry("POST", res_type, resource=resource)
    entry.if_none_exist = req.header("if-none-exist") or None
    return _written(ctx, req, _store_write(ctx, entry))


def conditional_update(ctx: Context, req: FhirRequest, res_type: str) -> FhirResponse:
    resource = _parse_json(req)
    if not isinstance(resource, dict):
        raise bad_request("The body must be a FHIR resource (a JSON object)")
    entry = Entry("PUT", res_type, None, _filters(req.query), resource, if_match=_if_match(req))
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


def search(
    ctx: Context,
    req: FhirRequest,
    res_type: str,
    compartment: str | None = None,
    form: bytes | None = None,
) -> FhirResponse:
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
    return _searchset(ctx, plan, path)


def _searchset(ctx: Context, plan: SearchPlan, path: str) -> FhirResponse:
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
        entries.append(b'{"resource":' + orjson.dumps(note) + b',"search":{"mode":"outcome"}}')
    links = bundling.page_links(
        ctx.base_url, path, plan.applied, plan.count, plan.offset, result.total, len(result.rows)
    )
    return FhirResponse(200, bundling.bundle_bytes("searchset", entries, result.total, links))


def everything(ctx: Context, req: FhirRequest, patient_id: str) -> FhirResponse:
    _read_current(ctx, "Patient", patient_id)
    with ctx.read_connection() as conn, limits.deadline():
        rows: list[Row] = everything_rows(conn, patient_id, 10_000)
        if ctx.access is not None:
            rows = ctx.access.filter_rows(conn, rows)
    entries = [bundling.search_entry(ctx.base_url, row, row.body) for row in rows]
    links = [("self", f"{ctx.base_url}/Patient/{patient_id}/$everything")]
    return FhirResponse(200, bundling.bundle_bytes("searchset", entries, len(rows), links))


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


# -- the table -----------------------------------------------------------------------------------

Handler = Callable[..., FhirResponse]


def dispatch(
    ctx: Context, req: FhirRequest, capability: Callable[[], bytes] | None = None
) -> FhirResponse:
    """Route one request (REST or Bundle entry) to its interaction."""
    hook = ctx.subscriptions
    if hook is not None and [p for p in req.path if p][:1] == ["Subscription"]:
        hook.before_write(ctx, req)
        response = _dispatch(ctx, req, capability)
        hook.after_write(ctx, response)
        return response
    return _dispatch(ctx, req, capability)


def _dispatch(
    ctx: Context, req: FhirRequest, capability: Callable[[], bytes] | None = None
) -> FhirResponse:
    path = [p for p in req.path if p]
    method = req.method.upper()
    n = len(path)
    if n == 0:
        if method == "POST":
            from fhir_server.api.bundles import process_bundle

            return process_bundle(ctx, req, capability)
        return _not_allowed(method, "POST")
    if path[0].startswith("$") or path[-1] == "$export":
        from fhir_server.bulk.operations import route

        routed = route(ctx, req, path)
        if routed is not None:
            return routed
    res_type = path[0]
    if res_type == "metadata" and n == 1:
        if method != "GET" or capability is None:
            return _not_allowed(method, "GET")
        return FhirResponse(200, capability(), interaction="capabilities")
    if res_type == "_history" and n == 1:
        if method != "GET":
            return _not_allowed(method, "GET")
        if ctx.access is not None:
            ctx.access.require_unconfined("s", "*", "System history")
        return _named(history(ctx, req, None, None), "history-system", "")
    _check_type(res_type)
    if n == 1:
        table: dict[str, Callable[[], FhirResponse]] = {
            "GET": lambda: search(ctx, req, res_type),
            "POST": lambda: create(ctx, req, res_type),
            "PUT": lambda: conditional_update(ctx, req, res_type),
            "DELETE": lambda: conditional_delete(ctx, req, res_type),
            "PATCH": lambda: conditional_patch(ctx, req, res_type),
        }
        names = {
            "GET": "search-type",
            "POST": "create",
            "PUT": "update",
            "DELETE": "delete",
            "PATCH": "patch",
        }
        if method in ("PUT", "DELETE", "PATCH") and not _filters(req.query):
            raise bad_request(
                f"{method} on a type needs search parameters (a conditional {names[method]})"
            )
        if method not in table:
            return _not_allowed(method, "GET, POST, PUT, DELETE, PATCH")
        perm = {"GET": "s", "POST": "c", "PUT": "u", "DELETE": "d", "PATCH": "u"}[method]
        _allow(ctx, perm, res_type)
        return _named(table[method](), names[method], res_type)
    second = path[1]
    if n == 2 and second == "_search":
        if method != "POST":
            return _not_allowed(method, "POST")
        content_type = (
            (req.header("content-type") or "application/x-www-form-urlencoded")
            .split(";")[0]
            .strip()
        )
        if content_type != "application/x-www-form-urlencoded":
            raise FhirError(
                415, "POST _search takes an application/x-www-form-urlencoded body", "not-supported"
            )
        _allow(ctx, "s", res_type)
        return _named(search(ctx, req, res_type, form=req.body), "search-type", res_type)
    if n == 2 and second == "_history":
        if method != "GET":
            return _not_allowed(method, "GET")
        if ctx.access is not None:
            ctx.access.require_unconfined("s", res_type, "Type history")
        return _named(history(ctx, req, res_type, None), "history-type", res_type)
    res_id = second
    if n == 2:
        instance: dict[str, tuple[str, Callable[[], FhirResponse]]] = {
            "GET": ("read", lambda: read(ctx, req, res_type, res_id)),
            "PUT": ("update", lambda: update(ctx, req, res_type, res_id)),
            "PATCH": ("patch", lambda: patch(ctx, req, res_type, res_id)),
            "DELETE": ("delete", lambda: delete(ctx, req, res_type, res_id)),
        }
        if method not in instance:
            return _not_allowed(method, "GET, PUT, PATCH, DELETE")
        name, handler = instance[method]
        perms = {"GET": "r", "PUT": "c" if req.creates else "u", "PATCH": "u", "DELETE": "d"}
        _allow(ctx, perms[method], res_type, res_id)
        return _named(handler(), name, res_type)
    third = path[2]
    if third == "_history":
        if method != "GET":
            return _not_allowed(method, "GET")
        _allow(ctx, "r", res_type, res_id)
        if n == 3:
            return _named(history(ctx, req, res_type, res_id), "history-instance", res_type)
        if n == 4:
            return _named(vread(ctx, req, res_type, res_id, path[3]), "vread", res_type)
    operation = ctx.operations.find(res_type, third) if n == 3 else None
    if operation is not None:
        if method not in operation.methods:
            return _not_allowed(method, ", ".join(sorted(operation.methods)))
        _allow(ctx, operation.perm, res_type, res_id)
        return _named(operation.handler(ctx, req, res_id), "operation", res_type)
    if res_type == "Patient" and n == 3:
        if method != "GET":
            return _not_allowed(method, "GET")
        if third == "$everything":
            _allow(ctx, "r", "Patient", res_id)
            if ctx.access is not None:
                ctx.access.require("s", "*")
            return _named(everything(ctx, req, res_id), "operation", "Patient")
        if third in resource_types() and (patient_compartment(third) or third == "Patient"):
            _allow(ctx, "s", third)
            return _named(search(ctx, req, third, compartment=res_id), "search-compartment", third)
    raise not_found(f"No interaction at /{'/'.join(path)}")


def _named(response: FhirResponse, interaction: str, res_type: str) -> FhirResponse:
    response.interaction = interaction
    response.res_type = res_type
    return response


def _not_allowed(method: str, allowed: str) -> FhirResponse:
    raise FhirError(
        405,
        f"Method {method} is not allowed here; allowed: {allowed}",
        "not-supported",
        headers={"Allow": allowed},
    )


def query_string(items: list[tuple[str, str]]) -> str:
    return urlencode(items)
