"""What every interaction handler shares: the request and response shapes, the `Context`, and
the small helpers (body parsing, conditional headers, access checks) the handlers call.

Handlers live in modules named for their concern (`instance`, `type_level`, `patch`, `search`,
`history`, `compartment`); `router` maps (method, path) to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection

from fhir_server import limits
from fhir_server.api.operations import Operations
from fhir_server.clock import to_http_date
from fhir_server.errors import FhirError, bad_request, not_found
from fhir_server.search.query import Compiler, SearchPlan, SearchResult
from fhir_server.search.registry import resource_types
from fhir_server.store.apply import Entry, EntryResult
from fhir_server.store.audit import Actor
from fhir_server.store.repository import Store, StoredResource, Transaction

if TYPE_CHECKING:
    from fhir_server.api.access import Access

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


@dataclass(slots=True)
class Fetched:
    """A request's one query, run by the caller before dispatch: interop.app awaits it on the
    event loop on PostgreSQL, then dispatches the request (routing, access guard, headers,
    shaping, errors) as any other. A read by id's row (None: the id was never used), or a
    search's plan (compiled once) with, for a direct search, its page."""

    key: tuple[str, str] | None = None  # a read by id: (type, id)
    row: StoredResource | None = None
    request: FhirRequest | None = None  # a search: the request it was planned for
    plan: SearchPlan | None = None
    page: SearchResult | None = None


@dataclass
class Context:
    """What interactions need: the store, the FHIR base URL, page-size settings, the caller's
    access and the registry of operations and hooks. No package's service lives here: bulk
    data, subscriptions and the AI worker reach requests only through `operations`."""

    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    tx: Transaction | None = None
    access: Access | None = None  # the caller's authorization (fhir_server.api.access)
    # called inside each write transaction just before it commits (the audit trail records
    # the change in the same transaction, so no change is ever without its AuditEvent)
    before_commit: Callable[[Transaction], None] | None = None
    actor: Actor | None = None  # who makes this request's changes (the audit trail's agent)
    # the operations and write hooks packages registered at composition (interop.app)
    operations: Operations = field(default_factory=Operations)
    capability: Callable[[], bytes] | None = None  # the CapabilityStatement (`metadata`)
    fetched: Fetched | None = None  # this request's query, run by the caller (`Fetched`)

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
    if ctx.fetched is not None and ctx.fetched.key == (res_type, res_id):
        stored = ctx.fetched.row
    elif ctx.tx is not None:
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
    if res_id is not None and ctx.access.judges_stored(perm, res_type):
        with ctx.read_connection() as conn:
            ctx.access.check_stored(conn, perm, res_type, res_id)


def _store_write(ctx: Context, entry: Entry) -> EntryResult:
    """A REST write through the store's one write path (inside a surrounding transaction
    when there is one), with this request's policy and agent. The content is the request's
    own parsed body, used once: the store takes it over (`owned`) instead of copying it."""
    return ctx.store.write(entry, ctx.actor, ctx.access, ctx.before_commit, ctx.tx, owned=True)


def _written(ctx: Context, req: FhirRequest, result: EntryResult) -> FhirResponse:
    assert result.stored is not None
    created = result.outcome == "created"
    return _respond_with(req, result.status, result.stored, ctx.base_url, created)
