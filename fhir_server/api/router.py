"""The interaction table: every RESTful interaction as one row (method, path pattern, guard,
handler, interaction name), plus the operations packages register (`operations`).

A REST call and a batch/transaction entry are both a `FhirRequest` going through `dispatch`.
A pattern's `{type}` must be a resource type; its variables are the handler's arguments after
(ctx, request). The guard asks the access policy before the handler touches anything. Matching
costs a few dict lookups: rows are indexed by (segment count, positions of literal segments).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from fhir_server import limits
from fhir_server.api import bundles, compartment, definitions
from fhir_server.api.compartment import search_compartment as compartment_search
from fhir_server.api.context import (
    Context,
    FhirRequest,
    FhirResponse,
    _allow,
    _check_type,
    _filters,
)
from fhir_server.api.history import history, type_history
from fhir_server.api.history import system as system_history
from fhir_server.api.instance import delete, read, update, vread
from fhir_server.api.operations import Handler, Operations
from fhir_server.api.patch import patch
from fhir_server.api.search import form_only, search, search_form, search_plan
from fhir_server.api.type_level import (
    conditional_delete,
    conditional_patch,
    conditional_update,
    create,
)
from fhir_server.errors import FhirError, bad_request, not_found
from fhir_server.search.query import SearchPlan

log = logging.getLogger("interop.http")
Guard = Callable[[Context, FhirRequest, str, "str | None"], None]  # (ctx, req, type, id)


def may(perm: str) -> Guard:
    """The caller needs `perm` on the type (and on the resource, for an instance); a create
    that a transaction turned into a PUT is judged as a create."""
    return lambda ctx, req, t, i: _allow(ctx, "c" if req.creates else perm, t, i)


def cond(perm: str) -> Guard:
    """A conditional update, delete or patch: search parameters first, then `perm`."""

    def guard(ctx: Context, req: FhirRequest, res_type: str, res_id: str | None) -> None:
        if not _filters(req.query):
            name = {"PUT": "update", "DELETE": "delete", "PATCH": "patch"}[req.method.upper()]
            raise bad_request(f"{req.method.upper()} on a type needs search parameters "
                              f"(a conditional {name})")  # fmt: skip
        _allow(ctx, perm, res_type)

    return guard


def unconfined(why: str) -> Guard:
    def guard(ctx: Context, req: FhirRequest, res_type: str, res_id: str | None) -> None:
        if ctx.access is not None:
            ctx.access.require_unconfined("s", res_type or "*", why)

    return guard


_system, _type = unconfined("System history"), unconfined("Type history")


def _form(ctx: Context, req: FhirRequest, res_type: str, res_id: str | None) -> None:
    form_only(req)
    _allow(ctx, "s", res_type)


def _in_comp(ctx: Context, req: FhirRequest, res_type: str, res_id: str | None) -> None:
    compartment.in_compartment(req, res_type)
    _allow(ctx, "s", res_type)


def _metadata(ctx: Context, req: FhirRequest) -> FhirResponse:
    if ctx.capability is None:
        raise _not_allowed(req.method.upper(), "GET")
    return FhirResponse(200, ctx.capability())


def _bundle(ctx: Context, req: FhirRequest) -> FhirResponse:
    return bundles.process_bundle(ctx, req, dispatch)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    guard: Guard | None
    handler: Handler
    interaction: str
    res_type: str = ""  # for a pattern without {type}: the type it names (metrics, access)
    inline: Callable[[], bool] | None = None  # Operation.inline


# fmt: off
ROUTES = tuple(Route(*row) for row in (
    # method  pattern                        guard      handler              interaction
    ("POST",   "",                           None,      _bundle,             ""),
    ("GET",    "metadata",                   None,      _metadata,           "capabilities"),
    ("GET",    "_history",                   _system,   system_history,      "history-system"),
    ("GET",    "{type}",                     may("s"),  search,              "search-type"),
    ("POST",   "{type}",                     may("c"),  create,              "create"),
    ("PUT",    "{type}",                     cond("u"), conditional_update,  "update"),
    ("DELETE", "{type}",                     cond("d"), conditional_delete,  "delete"),
    ("PATCH",  "{type}",                     cond("u"), conditional_patch,   "patch"),
    ("POST",   "{type}/_search",             _form,     search_form,         "search-type"),
    ("GET",    "{type}/_history",            _type,     type_history,        "history-type"),
    ("GET",    "{type}/{id}",                may("r"),  read,                "read"),
    ("PUT",    "{type}/{id}",                may("u"),  update,              "update"),
    ("PATCH",  "{type}/{id}",                may("u"),  patch,               "patch"),
    ("DELETE", "{type}/{id}",                may("d"),  delete,              "delete"),
    ("GET",    "{type}/{id}/_history",       may("r"),  history,             "history-instance"),
    ("GET",    "{type}/{id}/_history/{vid}", may("r"),  vread,               "vread"),
    ("GET",    "Patient/{id}/{compartment}", _in_comp,  compartment_search,  "search-compartment"),
))  # and the registered operations (`operations`), as rows with the interaction "operation"
# fmt: on


def _typed(res_type: str, reads: dict[str, Handler]) -> tuple[Route, ...]:
    """The `{type}` and `{type}/{id}` rows for one type, its reads (`GET`) answered by
    `reads` (by pattern), its writes by the generic handlers: a literal pattern wins over
    `{type}`, so it must carry every method."""
    rows = []
    for r in ROUTES:
        if r.pattern not in ("{type}", "{type}/{id}"):
            continue
        pattern = r.pattern.replace("{type}", res_type)
        handler = reads.get(pattern) if r.method == "GET" else None
        if handler is None:
            handler = partial(_bound, r.handler, res_type)
        rows.append(Route(r.method, pattern, r.guard, handler, r.interaction, res_type))
    return tuple(rows)


def _bound(
    handler: Handler, res_type: str, ctx: Context, req: FhirRequest, *rest: str
) -> FhirResponse:
    return handler(ctx, req, res_type, *rest)


# OperationDefinition: the declared operations' definitions are readable though not stored
ROUTES += _typed(
    "OperationDefinition",
    {"OperationDefinition": definitions.search, "OperationDefinition/{id}": definitions.read},
)
# SearchParameter: the official definitions of the parameters offered, likewise
ROUTES += _typed(
    "SearchParameter",
    {"SearchParameter": definitions.search_search_parameters,
     "SearchParameter/{id}": definitions.read_search_parameter},
)  # fmt: skip


# -- the matcher -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pattern:
    names: tuple[tuple[int, str], ...]  # (position, variable name)
    methods: dict[str, Route]
    allow: str = ""


# per segment count: [(literal positions, {literal values: pattern})], most specific first
Index = dict[int, list[tuple[tuple[int, ...], dict[tuple[str, ...], _Pattern]]]]


def _index(routes: list[Route]) -> Index:
    groups: dict[tuple[int, tuple[int, ...]], dict[tuple[str, ...], _Pattern]] = {}
    for route in routes:
        segments = route.pattern.split("/") if route.pattern else []
        literals = tuple(i for i, s in enumerate(segments) if not s.startswith("{"))
        names = tuple((i, s[1:-1]) for i, s in enumerate(segments) if s.startswith("{"))
        group = groups.setdefault((len(segments), literals), {})
        found = group.setdefault(tuple(segments[i] for i in literals), _Pattern(names, {}))
        found.methods[route.method] = route
        found.allow = ", ".join(found.methods)
    index: Index = {}
    for (n, literals), group in groups.items():
        index.setdefault(n, []).append((literals, group))
    for alternatives in index.values():  # more literals first; then the rightmost literal
        alternatives.sort(key=lambda a: (-len(a[0]), -max(a[0], default=-1)))
    return index


def _routes(operations: Operations) -> Index:
    if operations.compiled is None:
        rows = [
            Route(
                method,
                op.pattern,
                may(op.perm) if op.perm else None,
                op.handler,
                "operation",
                op.res_type,
                op.inline,
            )  # fmt: skip
            for op in operations.table
            for method in sorted(op.methods)
        ]
        operations.compiled = _index([*ROUTES, *rows])
    compiled: Index = operations.compiled
    return compiled


def dispatch(ctx: Context, req: FhirRequest) -> FhirResponse:
    """Route one request (REST or Bundle entry) to its interaction, inside the write hooks
    registered for its resource type."""
    path = [p for p in req.path if p]
    hooks = ctx.operations.hooks.get(path[0]) if path else None
    if not hooks:
        return _route(ctx, req, path)
    for hook in hooks:
        hook.before_write(ctx, req)
    response = _route(ctx, req, path)
    for hook in hooks:
        hook.after_write(ctx, response)
    return response


def inline(ctx: Context, req: FhirRequest) -> bool:
    """May `dispatch(ctx, req)` run on the event loop? Only for an operation that says it
    needs no database now (`Operation.inline`), by GET (a POSTed body may carry a whole
    ValueSet to expand), at type level or without an access policy (an instance-level guard
    reads the resource), and with no write hooks on its type: the thread hop of
    `run_in_threadpool` costs more than such an operation's whole work."""
    if req.method != "GET" or not req.path or req.path[-1][:1] != "$":
        return False  # not an operation: decided without a route lookup (reads, searches)
    path = [p for p in req.path if p]
    if ctx.operations.hooks.get(path[0]):
        return False
    found = _match(ctx, path)
    if found is None:
        return False
    route = found.methods.get(req.method.upper())
    if route is None or route.inline is None:
        return False
    if ctx.access is not None and any(name == "id" for _, name in found.names):
        return False
    return route.inline()


def planned_search(ctx: Context, req: FhirRequest) -> SearchPlan | None:
    """For `GET {type}` answered by the generic search (no write hooks on the type): its
    checks made and its plan compiled now, as `dispatch` would, so that the caller can run a
    direct plan's one query itself (interop.app awaits it on the event loop on PostgreSQL)
    and dispatch with plan and page in `ctx.fetched`; None for any other request. Raises
    what `dispatch` would raise before its query."""
    path = [p for p in req.path if p]
    if req.method != "GET" or len(path) != 1 or path[0][:1] in ("_", "$"):
        return None
    if ctx.operations.hooks.get(path[0]):
        return None
    found = _match(ctx, path)
    route = found.methods.get("GET") if found is not None else None
    if route is None or route.handler is not search:  # e.g. OperationDefinition's own
        return None
    _resolved(ctx, req, path)  # the checks dispatch makes before its handler
    return search_plan(ctx, req, path[0])[0]


def _match(ctx: Context, path: list[str]) -> _Pattern | None:
    for literals, group in _routes(ctx.operations).get(len(path), ()):
        found = group.get(tuple(path[i] for i in literals))
        if found is not None:
            return found
    return None


def _route(ctx: Context, req: FhirRequest, path: list[str]) -> FhirResponse:
    route, values, res_type = _resolved(ctx, req, path)
    response = route.handler(ctx, req, *values.values())
    response.interaction, response.res_type = route.interaction, res_type
    return response


def _resolved(ctx: Context, req: FhirRequest, path: list[str]) -> tuple[Route, dict[str, str], str]:
    """The route of a request, its path values and resource type, after the type check and
    the route's access guard (which raise what the client sees)."""
    found = _match(ctx, path)
    if found is None:
        if path:
            _check_type(path[0])
        raise not_found(f"No interaction at /{'/'.join(path)}")
    values = {name: path[i] for i, name in found.names}
    if "type" in values:
        _check_type(values["type"])
    method = req.method.upper()
    route = found.methods.get(method)
    if route is None:
        raise _not_allowed(method, found.allow)
    res_type = values.get("type") or values.get("compartment") or route.res_type
    if route.guard is not None:
        route.guard(ctx, req, res_type, values.get("id"))
    return route, values, res_type


def _not_allowed(method: str, allowed: str) -> FhirError:
    return FhirError(
        405,
        f"Method {method} is not allowed here; allowed: {allowed}",
        "not-supported",
        headers={"Allow": allowed},
    )


# -- failures -----------------------------------------------------------------------------------


def failure(exc: Exception) -> FhirError:
    """Every failure as what the client sees, decided here alone: a `FhirError` as raised, a
    database refusal (timeout, too costly) as its 4xx/503, anything else a logged 500."""
    if isinstance(exc, FhirError):
        return exc
    refused = limits.database_error(exc)
    if refused is not None:
        log.warning("FHIR request refused by the database: %s", type(exc).__name__)
        return refused
    log.error("unhandled error in FHIR request", exc_info=exc)
    return FhirError(500, "Internal server error", "exception")
