"""The one write path: a transaction's entries applied in FHIR order, with typed results.

Every change goes through here, whichever channel makes it: a REST create, update, patch or
delete (one entry), a POSTed transaction Bundle, and the channels' mapped Bundles (HL7, Orthanc,
OpenEMR, the AI worker, `$import`). It owns what makes a transaction one: the processing order
(DELETE, POST, PUT/PATCH, GET; R4 §3.1.0.11.2), ids assigned up front with `urn:uuid:` and
conditional references rewritten before anything is written, conditional create/update/patch/
delete resolved among what the caller may see, the identity lock that keeps two concurrent
conditional creates from both creating, and the access policy asked on every entry. It never
sees HTTP and never changes the caller's Bundle: entries hold their own copies.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import ColumnElement, Connection, FromClause

from fhir_server import fhirjson
from fhir_server.errors import FhirError, bad_request, not_found, precondition_failed
from fhir_server.search.registry import resource_types
from fhir_server.store.models import resources
from fhir_server.store.patch import JSON_PATCH, apply_patch
from fhir_server.store.repository import (
    Identity,
    StoredResource,
    Transaction,
    _references,
    identifier_condition,
)

if TYPE_CHECKING:
    from fhir_server.store.audit import Actor
    from fhir_server.store.repository import Store

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
MAX_ENTRIES = 10_000


class Policy(Protocol):
    """The access policy as the write path sees it (fhir_server.api.access.Access is one)."""

    def require(self, perm: str, res_type: str) -> None: ...

    def check_stored(self, conn: Connection, perm: str, res_type: str, res_id: str) -> None: ...

    def check_body(
        self, perm: str, resource: Any, resolve: Callable[[dict[str, Any]], None] | None = None
    ) -> None: ...

    def visible_conditions(
        self, res_type: str, rows: FromClause = resources
    ) -> list[ColumnElement[bool]]: ...


@dataclass(slots=True)
class Entry:
    """One interaction of a transaction. `res_id` None with `query`: conditional."""

    method: str  # POST, PUT, PATCH, DELETE (GET and HEAD: a read, done by the caller)
    res_type: str
    res_id: str | None = None
    query: list[tuple[str, str]] = field(default_factory=list)
    resource: Any = None  # the content (POST, PUT) or the patch document (PATCH)
    if_none_exist: str | None = None
    if_match: int | None = None
    full_url: str | None = None
    patch_type: str = JSON_PATCH
    all_matches: bool = False  # conditional delete: delete every match, not just one
    strict_id: bool = False  # conditional update: a body id must be the matched resource's
    matched: str | None = None  # set when a conditional create found its resource
    # the content's Reference objects (POST, PUT), found once by `_assign_ids` for the
    # rewrite of fullUrls, the conditional references' look-up and their resolution
    refs: list[dict[str, Any]] | None = None
    # the content is part of a request body that passed `limits.check_document` as a whole:
    # validation does not walk it for the document limits again
    checked: bool = False


@dataclass(slots=True)
class EntryResult:
    """What one entry did. `outcome`: created, updated, unchanged, deleted, matched (a
    conditional create that found its resource), absent (a delete of nothing), read."""

    res_type: str
    res_id: str | None
    version: int | None
    outcome: str
    stored: StoredResource | None = None
    response: Any = None  # a read entry: what the caller's reader returned

    @property
    def status(self) -> int:
        if self.outcome == "created":
            return 201
        return 204 if self.outcome in ("deleted", "absent") else 200


Reader = Callable[[Transaction, int], Any]


def apply(
    store: Store,
    bundle: dict[str, Any],
    actor: Actor | None = None,
    policy: Policy | None = None,
    read: Reader | None = None,
    before_commit: Callable[[Transaction, list[EntryResult]], None] | None = None,
    interaction: str | None = None,
    owned: bool = False,
    checked: bool = False,
) -> list[EntryResult]:
    """Apply a transaction Bundle all-or-nothing; one result per entry, in entry order.
    A failing entry raises FhirError and nothing is written. `read` answers GET entries.

    `owned`: the caller hands the Bundle over (a request body it parsed, an import batch it
    built) and never looks at its resources again, so they are written as they are instead
    of copied first. `checked`: the Bundle passed `limits.check_document` as a whole."""
    entries = transaction_entries(bundle, owned, checked)
    narrow = policy.visible_conditions if policy is not None else None
    with store.transaction(actor, interaction, narrow) as tx:
        results = run(tx, entries, policy, read, in_bundle=True)
        if before_commit is not None:
            before_commit(tx, results)
    return results


def write(
    store: Store,
    entry: Entry,
    actor: Actor | None = None,
    policy: Policy | None = None,
    before_commit: Callable[[Transaction], None] | None = None,
    tx: Transaction | None = None,
    owned: bool = False,
) -> EntryResult:
    """One interaction (a REST write) through the same path, in its own transaction or in
    `tx`. The caller's content is copied, not changed, unless `owned` (see `apply`)."""
    if entry.resource is not None and not owned:
        entry.resource = _copy(entry.resource)
    if tx is not None:
        return run(tx, [entry], policy, None, in_bundle=False)[0]
    narrow = policy.visible_conditions if policy is not None else None
    with store.transaction(actor, None, narrow, before_commit) as own:
        return run(own, [entry], policy, None, in_bundle=False)[0]


def transaction_entries(bundle: Any, owned: bool = False, checked: bool = False) -> list[Entry]:
    """A transaction Bundle's entries as `Entry`s (with copies of the resources unless
    `owned`), or the FhirError it deserves."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("A transaction must be a Bundle", ["resourceType"])
    if bundle.get("type") != "transaction":
        raise bad_request(
            f"Bundle.type must be transaction, not '{bundle.get('type')}'", ["Bundle.type"]
        )
    raw = entry_list(bundle)
    return [_as_entry(i, entry, owned, checked) for i, entry in enumerate(raw)]


def entry_list(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Bundle.entry checked: a list of objects, not too many, each with its own fullUrl."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad_request("Bundle.entry must be a list of entries", ["Bundle.entry"])
    if len(entries) > MAX_ENTRIES:
        raise FhirError(413, f"A Bundle may hold at most {MAX_ENTRIES} entries", "too-costly")
    _reject_duplicate_full_urls(entries)
    return entries


def _as_entry(index: int, raw: dict[str, Any], owned: bool, checked: bool) -> Entry:
    where = f"Bundle.entry[{index}]"
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad_request(f"{where}.request is missing", [f"{where}.request"])
    method, url = request.get("method"), request.get("url")
    if method not in ORDER or not isinstance(url, str) or not url:
        raise bad_request(
            f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
            [f"{where}.request"],
        )
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise bad_request(f"{where}: a transaction may not hold a nested Bundle")
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise bad_request(f"{where}: a {method} entry needs a resource", [f"{where}.resource"])
    full_url = raw.get("fullUrl")
    entry = Entry(
        method,
        path[0],
        path[1] if len(path) > 1 else None,
        parse_qsl(parts.query, keep_blank_values=True),
        _copy(resource) if resource is not None and not owned else resource,
        full_url=full_url if isinstance(full_url, str) else None,
        checked=checked,
    )
    if method in ("GET", "HEAD"):
        return entry  # the caller's reader interprets the url
    if path[0] not in resource_types():
        unknown = FhirError(404, f"Unknown resource type '{path[0]}'", "not-supported")
        raise _at(index, entry, unknown)
    if len(path) > 2 or (len(path) == 2 and path[1][:1] in "_$"):
        raise _at(index, entry, bad_request(f"No write interaction at {url[:200]}"))
    if method == "POST" and len(path) != 1:
        raise _at(index, entry, bad_request("A create (POST) goes to a type, not an instance"))
    if len(path) == 1 and method != "POST" and not entry.query:
        raise _at(index, entry, bad_request(f"{method} on a type needs search parameters"))
    if isinstance(request.get("ifNoneExist"), str) and method == "POST":
        entry.if_none_exist = request["ifNoneExist"]
    if isinstance(request.get("ifMatch"), str):
        entry.if_match = if_match(request["ifMatch"])
    return entry


def if_match(value: str) -> int:
    """The version an If-Match ETag (`W/"3"`) names."""
    digits = value.strip().removeprefix("W/").strip('"')
    try:
        return int(digits)
    except ValueError:
        raise bad_request(f"If-Match must be an ETag like W/\"3\", not '{value}'") from None


# -- one transaction ------------------------------------------------------------------------------


def run(
    tx: Transaction,
    entries: Sequence[Entry],
    policy: Policy | None,
    read: Reader | None,
    in_bundle: bool,
) -> list[EntryResult]:
    """Apply `entries` in `tx` in FHIR order: deletes first (they change what conditional
    creates see), then ids and references, then creates, updates and patches, then reads."""
    order = sorted(range(len(entries)), key=lambda i: ORDER[entries[i].method])
    results: list[EntryResult | None] = [None] * len(entries)
    tx.conformance.policy = policy  # validation resolves references as the caller may see
    step = _Step(tx, policy, in_bundle)
    for i in order:
        if entries[i].method == "DELETE":
            results[i] = step.run(i, entries[i])
    _assign_ids(tx, entries, policy, in_bundle)
    if in_bundle:
        _reject_overlaps(entries)
        # a POST's id was made up just now (`_assign_ids`): nothing to look up, only a key
        tx.prefetch(
            [
                (e.res_type, e.res_id)
                for e in entries
                if e.res_id and e.matched is None and e.method in ("PUT", "PATCH")
            ],
            new=sum(1 for e in entries if e.method == "POST" and e.matched is None),
        )
    tx.prefetch_references(
        [e.resource for e in entries if e.method in ("POST", "PUT")],
        [e.refs for e in entries if e.method in ("POST", "PUT")],
    )
    for i in order:
        entry = entries[i]
        if entry.method in ("GET", "HEAD"):
            if read is None:
                raise bad_request(f"Bundle.entry[{i}]: reads are not supported here")
            results[i] = EntryResult(entry.res_type, entry.res_id, None, "read", None, read(tx, i))
        elif entry.method != "DELETE":
            results[i] = step.run(i, entry)
    return [r for r in results if r is not None]


@dataclass(slots=True)
class _Step:
    tx: Transaction
    policy: Policy | None
    in_bundle: bool

    def run(self, index: int, entry: Entry) -> EntryResult:
        try:
            return getattr(self, entry.method.lower())(entry)  # type: ignore[no-any-return]
        except FhirError as exc:
            if self.in_bundle:
                raise _at(index, entry, exc) from None
            raise

    def require(self, perm: str, res_type: str) -> None:
        if self.policy is not None:
            self.policy.require(perm, res_type)

    def stored(self, perm: str, res_type: str, res_id: str) -> None:
        if self.policy is not None:
            self.tx.flush()
            self.policy.check_stored(self.tx.conn, perm, res_type, res_id)

    def body(self, perm: str, resource: Any) -> None:
        """New content is judged as it will be stored: its conditional references resolved
        first (among what the caller may see), so none can smuggle in another patient."""
        if self.policy is not None:
            self.policy.check_body(perm, resource, self.tx.resolve_conditional_references)

    def post(self, entry: Entry) -> EntryResult:
        res_type, resource = entry.res_type, entry.resource
        self.require("c", res_type)
        if isinstance(resource, dict) and resource.get("resourceType") not in (None, res_type):
            raise bad_request(
                f"resourceType '{resource.get('resourceType')}' "
                f"does not match the URL type '{res_type}'",
                ["resourceType"],
            )
        if entry.matched is not None:
            if not self.in_bundle:
                self.body("c", resource)
            found = self.tx.current(res_type, entry.matched)
            if found is None:
                raise precondition_failed("conditional create target vanished")
            return _result(found[1], "matched")
        self.body("c", resource)
        assert entry.res_id is not None
        result = self.tx.create(resource, entry.res_id, checked=entry.checked, refs=entry.refs)
        return _result(result.stored, "created")

    def put(self, entry: Entry) -> EntryResult:
        assert entry.res_id is not None
        self.require("u", entry.res_type)
        self.stored("u", entry.res_type, entry.res_id)
        self.body("u", entry.resource)
        result = self.tx.update(
            entry.res_type,
            entry.res_id,
            entry.resource,
            entry.if_match,
            checked=entry.checked,
            refs=entry.refs,
        )
        outcome = "created" if result.created else "updated" if result.changed else "unchanged"
        return _result(result.stored, outcome)

    def patch(self, entry: Entry) -> EntryResult:
        res_type, res_id = entry.res_type, entry.res_id
        assert res_id is not None
        self.require("u", res_type)
        self.stored("u", res_type, res_id)
        found = self.tx.current(res_type, res_id, lock=True)
        if found is None or found[1].deleted:
            raise not_found(f"{res_type}/{res_id} is not known")
        current = found[1]
        if entry.if_match is not None and entry.if_match != current.version_id:
            raise precondition_failed(
                f"Version conflict: If-Match {entry.if_match}, current {current.version_id}"
            )
        patched = apply_patch(current.json(), entry.resource, entry.patch_type)
        self.body("u", patched)
        result = self.tx.update(res_type, res_id, patched, None, method="PATCH")
        return _result(result.stored, "updated" if result.changed else "unchanged")

    def delete(self, entry: Entry) -> EntryResult:
        res_type = entry.res_type
        self.require("d", res_type)
        if entry.res_id is not None:
            ids = [entry.res_id]
            self.stored("d", res_type, entry.res_id)
        else:
            ids = self.tx.search_ids(res_type, entry.query)
            if len(ids) > 1 and not entry.all_matches:
                raise precondition_failed(f"The conditional delete matched {len(ids)} resources")
            for res_id in ids:
                self.stored("d", res_type, res_id)
        deleted = [d for d in (self.tx.delete(res_type, res_id) for res_id in ids) if d]
        if not deleted:
            return EntryResult(res_type, entry.res_id, None, "absent")
        return _result(deleted[0], "deleted")


def _result(stored: StoredResource, outcome: str) -> EntryResult:
    return EntryResult(stored.res_type, stored.res_id, stored.version_id, outcome, stored)


def _at(index: int, entry: Entry, exc: FhirError) -> FhirError:
    """Name the entry a transaction failed on."""
    path = "/".join(p for p in (entry.res_type, entry.res_id) if p)
    exc.diagnostics = f"Bundle.entry[{index}] ({entry.method} {path}): {exc.diagnostics}"
    exc.expression = [f"Bundle.entry[{index}]", *exc.expression]
    if exc.issues:
        where = f"Bundle.entry[{index}].resource"
        exc.issues = [
            {**i, "diagnostics": f"Bundle.entry[{index}] ({entry.method} {path}): "
             f"{i.get('diagnostics', '')}",
             "expression": [where + ("." + e.partition(".")[2] if "." in e else "")
                            for e in i.get("expression", [])]}
            for i in exc.issues
        ]  # fmt: skip
    return exc


# -- ids, conditions and references --------------------------------------------------------------


def _condition(entry: Entry) -> list[tuple[str, str]] | None:
    """The search of a conditional create, update or patch (None: not conditional)."""
    if entry.method == "POST" and entry.if_none_exist:
        return parse_qsl(entry.if_none_exist.split("?", 1)[-1], keep_blank_values=True)
    if entry.method in ("PUT", "PATCH") and entry.res_id is None:
        return entry.query
    return None


def _assign_ids(
    tx: Transaction, entries: Sequence[Entry], policy: Policy | None, in_bundle: bool
) -> None:
    """Give every created resource its id up front, resolve conditional targets, and rewrite
    references to `fullUrl`s (`urn:uuid:` placeholders) to what they now name."""
    conditions = [_condition(e) for e in entries]
    keys = [
        identifier_condition(e.res_type, c) if c is not None else None
        for e, c in zip(entries, conditions, strict=True)
    ]
    by_identifier = tx.ids_by_identifier([k for k in keys if k is not None])
    _lock_other_creates(tx, entries, keys)
    mapping: dict[str, str] = {}
    for index, entry in enumerate(entries):
        condition, key = conditions[index], keys[index]
        ids: list[str] = []
        if condition is not None:
            ids = list(by_identifier[key]) if key else tx.search_ids(entry.res_type, condition)
            if len(ids) > 1:
                raise precondition_failed(_multiple(index, entry, len(ids), in_bundle))
        resource = entry.resource
        if entry.method == "POST":
            if ids:
                entry.matched = entry.res_id = ids[0]
            else:
                entry.res_id = str(uuid.uuid4())
                if isinstance(resource, dict):
                    resource["id"] = entry.res_id
        elif condition is not None:  # a conditional PUT or PATCH
            body_id = resource.get("id") if isinstance(resource, dict) else None
            if ids:
                if entry.strict_id and body_id and body_id != ids[0]:
                    raise bad_request(
                        f"The resource id '{body_id}' differs from the matched "
                        f"{entry.res_type}/{ids[0]}",
                        ["id"],
                    )
                target = ids[0]
            elif entry.method == "PUT":
                target = body_id if isinstance(body_id, str) and body_id else str(uuid.uuid4())
            else:
                where = f"Bundle.entry[{index}]: " if in_bundle else ""
                raise FhirError(404, f"{where}conditional PATCH matched nothing", "not-found")
            entry.res_id, entry.query = target, []
            if entry.method == "PUT" and isinstance(resource, dict):
                resource["id"] = target
        writes = entry.method in ("POST", "PUT", "PATCH")
        if entry.full_url is not None and entry.res_id and writes:
            mapping[entry.full_url] = f"{entry.res_type}/{entry.res_id}"
    for entry in entries:
        if entry.method in ("POST", "PUT") and isinstance(entry.resource, dict):
            entry.refs = _references(entry.resource)
            if mapping:
                for ref in entry.refs:
                    rewritten = mapping.get(ref["reference"])
                    if rewritten is not None:
                        ref["reference"] = rewritten
        elif mapping and isinstance(entry.resource, dict | list):
            _rewrite(entry.resource, mapping)  # a PATCH document


def _multiple(index: int, entry: Entry, count: int, in_bundle: bool) -> str:
    if in_bundle:
        what = "ifNoneExist" if entry.method == "POST" else f"conditional {entry.method}"
        return f"Bundle.entry[{index}]: {what} matched {count} resources"
    if entry.method == "POST":
        return f"If-None-Exist '{entry.if_none_exist}' matched {count} resources"
    kind = "update" if entry.method == "PUT" else "patch"
    return f"The conditional {kind} matched {count} resources"


def _lock_other_creates(
    tx: Transaction, entries: Sequence[Entry], keys: list[Identity | None]
) -> None:
    """Conditional creates whose condition is not a plain identifier: two transactions with
    the same condition at once would both find nothing and both create, so (PostgreSQL) each
    holds a lock on its condition until commit. Identifier conditions are locked per identity
    by `ids_by_identifier`; SQLite writers are serialised already."""
    if not tx.sql.postgres:
        return
    wanted = sorted(
        {
            _condition_key(e.res_type, e.if_none_exist)
            for e, key in zip(entries, keys, strict=True)
            if e.method == "POST" and e.if_none_exist and key is None
        }
    )
    if wanted:
        tx.conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(k) FROM unnest(%(keys)s::bigint[]) AS k ORDER BY k",
            {"keys": wanted},
        )


def _condition_key(res_type: str, condition: str) -> int:
    query = sorted(parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True))
    digest = hashlib.blake2b(f"{res_type}?{query!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _reject_duplicate_full_urls(entries: list[dict[str, Any]]) -> None:
    """Each entry of a batch or transaction has its own fullUrl (R4 §3.1.0.11.2 / Bundle
    bdl-7): a reference to a shared one would resolve to either entry."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if full_url is None:
            continue
        if not isinstance(full_url, str):
            raise bad_request(
                f"Bundle.entry[{index}].fullUrl must be a string", [f"Bundle.entry[{index}]"]
            )
        if full_url in seen:
            raise bad_request(
                f"Bundle.entry[{index}].fullUrl '{full_url[:200]}' is already the fullUrl of "
                f"Bundle.entry[{seen[full_url]}]; every entry needs its own",
                [f"Bundle.entry[{index}].fullUrl"],
            )
        seen[full_url] = index


def _reject_overlaps(entries: Sequence[Entry]) -> None:
    """A transaction may not write one resource twice (R4 §3.1.0.11.2)."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.method in ("GET", "HEAD") or not entry.res_id or entry.matched:
            continue
        key = f"{entry.res_type}/{entry.res_id}"
        if key in seen:
            raise FhirError(
                409,
                f"Bundle.entry[{index}] writes {key}, "
                f"which Bundle.entry[{seen[key]}] already writes",
                "conflict",
                [f"Bundle.entry[{index}]"],
            )
        seen[key] = index


def _rewrite(node: Any, mapping: dict[str, str]) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("reference")
            if isinstance(ref, str) and ref in mapping:
                item["reference"] = mapping[ref]
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        else:
            stack.extend(v for v in item if isinstance(v, dict | list))


def _copy(value: Any) -> Any:
    """The entry's own copy of caller content (the store changes ids and references): what
    a JSON round trip would give, made directly when the content is plain parsed JSON."""
    try:
        return _plain_copy(value)
    except (_NotPlain, RecursionError):
        return fhirjson.loads(fhirjson.dumps(value))


class _NotPlain(Exception):
    """Content a JSON round trip would change (a float, a tuple, a str subclass, ...)."""


_SCALARS = frozenset({str, bool, type(None), fhirjson.FhirDecimal})
_INT_RANGE = range(-(2**63), 2**64)  # what orjson writes and reads back as the same int


def _plain_copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotPlain
            out[k] = v if type(v) in _SCALARS else _plain_copy(v)
        return out
    if kind is list:
        return [v if type(v) in _SCALARS else _plain_copy(v) for v in value]
    if kind in _SCALARS or (kind is int and value in _INT_RANGE):
        return value
    raise _NotPlain
