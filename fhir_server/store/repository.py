"""The repository: the one write path into the canonical store (DESIGN.md).

Every change, whether a REST call, a Bundle entry or a mapped HL7/DICOM/OpenEMR message, goes
through `Transaction`: validate, resolve references, write the new version (keeping the old one),
rewrite the search index and append an outbox row, all inside one database transaction.
Reads return the stored JSON bytes untouched, so serving a resource never re-parses it.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, Engine, and_, false, or_, select, true

from fhir_server import fhirjson, limits, metrics
from fhir_server.clock import now_us, to_instant
from fhir_server.errors import FhirError, bad_request, conflict, precondition_failed
from fhir_server.search.extract import IndexRows, extract, index_kinds
from fhir_server.search.registry import params_for
from fhir_server.store.conformance import TYPES as CONFORMANCE_TYPES
from fhir_server.store.conformance import StoredConformance
from fhir_server.store.db import SqliteWriter, write_transaction
from fhir_server.store.models import (
    INDEX_TABLES,
    idx_token,
    outbox,
    resource_versions,
    resources,
)
from fhir_server.store.models import (
    text_equals as _equals,
)
from fhir_server.store.statistics import PlannerStatistics
from fhir_server.validation import validate_resource
from fhir_server.validation.profiles import profiles

if TYPE_CHECKING:
    from fhir_server.search.query import Narrow
    from fhir_server.store.apply import Entry, EntryResult, Policy, Reader
    from fhir_server.store.audit import Actor


class ChangeAudit(Protocol):
    """Writes a committed change's AuditEvent inside the change's own transaction."""

    def record_change(
        self, tx: Transaction, actor: Actor | None, interaction: str | None = None
    ) -> None: ...


R = resources.c
V = resource_versions.c
Identity = tuple[str, str | None, str]  # (type, identifier system or None: any, value)


@dataclass(slots=True)
class StoredResource:
    """One version of a resource as stored; `body` is None for a deletion."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: int
    deleted: bool
    body: bytes | None
    method: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def location(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version_id}"

    def json(self) -> dict[str, Any]:
        return fhirjson.loads(self.body) if self.body else {}


@dataclass(slots=True)
class WriteResult:
    stored: StoredResource
    created: bool
    changed: bool = True


class HasStore(Protocol):
    """What a channel needs from the composition root: the store (the API's Context is one).
    Channels take this, not `fhir_server.api.Context`, so they never depend on HTTP."""

    @property
    def store(self) -> Store: ...


class FhirReads(HasStore, Protocol):
    """Reads a channel makes as a FHIR client would (the composition root provides them over
    the REST dispatch): searches and reads see only what `access` lets the caller see, and a
    missing resource raises the `FhirError` REST would answer."""

    def search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The resources a search matches (its `_include`d ones left out)."""
        ...

    def read(self, res_type: str, res_id: str) -> dict[str, Any]: ...

    def with_access(self, access: Any) -> FhirReads:
        """The same reads on behalf of a caller with this access (None: everything)."""
        ...


class Statements:
    """The write path's and the read-by-id's SQL as plain DBAPI strings, built once.

    These run for every resource written or read; SQLAlchemy's expression, compilation-cache
    and result layers cost several times the database work there. Searches, which vary,
    stay SQLAlchemy expressions.
    """

    def __init__(self, dialect_name: str, paramstyle: str) -> None:
        m = "?" if paramstyle == "qmark" else "%s"

        self.postgres = dialect_name == "postgresql"

        def insert_sql(table: Any) -> tuple[str, str]:
            """(INSERT for executemany, COPY): on PostgreSQL a large batch goes by COPY, since
            an executemany still executes row by row on the server, ten times slower."""
            names = [c.name for c in table.columns if c.name != "pk"]
            cols = ", ".join(names)
            marks = ", ".join([m] * len(names))
            return (
                f"INSERT INTO {table.name} ({cols}) VALUES ({marks})",
                f"COPY {table.name} ({cols}) FROM STDIN",
            )

        where_id = f"FROM resources WHERE res_type = {m} AND res_id = {m}"
        self.read = f"SELECT version_id, last_updated, deleted, body {where_id}"
        self.current = f"SELECT pk, version_id, last_updated, deleted, body {where_id}"
        self._lock = "" if dialect_name == "sqlite" else " FOR UPDATE"
        self._mark = m
        self.current_locked = self.current + self._lock
        self.insert_new_resources = (
            "INSERT INTO resources (pk, res_type, res_id, version_id, last_updated, deleted, body) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m})",
            "COPY resources (pk, res_type, res_id, version_id, last_updated, deleted, body) "
            "FROM STDIN",
        )
        self.allocate_pks = "SELECT nextval(pg_get_serial_sequence('resources', 'pk')) " + (
            f"FROM generate_series(1, {m})"
        )
        self.insert_resource = (
            "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, body) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}) RETURNING pk"
        )
        self.update_resource = (
            f"UPDATE resources SET version_id = {m}, last_updated = {m}, deleted = {m}, "
            f"body = {m} WHERE pk = {m}"
        )
        self.insert_version = insert_sql(resource_versions)
        self.insert_outbox = insert_sql(outbox)
        self.pending_audit = f"SELECT pk, recorded, event FROM audit_pending ORDER BY pk LIMIT {m}"
        self.expanded_audit = f"DELETE FROM audit_pending WHERE pk <= {m}"
        self.insert_index = {kind: insert_sql(t) for kind, t in INDEX_TABLES.items()}
        self.clear_index = {
            kind: f"DELETE FROM {t.name} WHERE resource_pk = {m}"
            for kind, t in INDEX_TABLES.items()
        }

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Statements per Store, kept for good
    def replace_row(self, kinds: tuple[str, ...]) -> str:
        """PostgreSQL: `update_resource` and the `clear_index` of `kinds` as one statement
        (data-modifying CTEs, each run once and to completion), so an update or delete of a
        Patient sends one statement and waits for one round trip here instead of six
        statements in two round trips. Parameters: update_resource's, then pk per kind."""
        m = self._mark
        parts = [
            f"resource AS (UPDATE resources SET version_id = {m}, last_updated = {m}, "
            f"deleted = {m}, body = {m} WHERE pk = {m})",
            *(
                f"clear_{kind} AS (DELETE FROM {INDEX_TABLES[kind].name} WHERE resource_pk = {m})"
                for kind in kinds
            ),
        ]
        return f"WITH {', '.join(parts)} SELECT 1"

    def current_many(self, res_type: str, ids: list[str]) -> tuple[str, tuple[str, ...]]:
        """`current` for several ids of one type (locked on PostgreSQL)."""
        marks = ", ".join([self._mark] * len(ids))
        sql = (
            "SELECT pk, res_id, version_id, last_updated, deleted, body FROM resources "
            f"WHERE res_type = {self._mark} AND res_id IN ({marks}){self._lock}"
        )
        return sql, (res_type, *ids)


class Store:
    """Entry point: reads outside transactions, and `transaction()` for every write."""

    def __init__(self, engine: Engine, base_url: str) -> None:
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self._sqlite_writer = SqliteWriter(engine) if engine.dialect.name == "sqlite" else None
        self.statistics = PlannerStatistics(engine, self.write_connection)
        self.listeners: list[Callable[[int], None]] = [self.statistics.record_writes]
        # after each commit that changed something: the resource types it changed
        self.change_listeners: list[Callable[[set[str]], None]] = []
        # per type: sees (and may rewrite) each new version's content before it is stored,
        # whichever path wrote it (REST, Bundle, PATCH, import)
        self.content_hooks: dict[str, Callable[[Transaction, str, dict[str, Any]], None]] = {}
        self.sql = Statements(engine.dialect.name, engine.dialect.paramstyle or "qmark")
        # the audit trail (fhir_server.store.audit): every committed change gets its event
        self.audit: ChangeAudit | None = None

    def apply(
        self,
        bundle: dict[str, Any],
        actor: Actor | None = None,
        policy: Policy | None = None,
        read: Reader | None = None,
        before_commit: Callable[[Transaction, list[EntryResult]], None] | None = None,
        interaction: str | None = None,
        owned: bool = False,
        checked: bool = False,
    ) -> list[EntryResult]:
        """Apply a transaction Bundle through the one write path (fhir_server.store.apply);
        `owned` and `checked` as there."""
        from fhir_server.store.apply import apply

        return apply(self, bundle, actor, policy, read, before_commit, interaction, owned, checked)

    def write(
        self,
        entry: Entry,
        actor: Actor | None = None,
        policy: Policy | None = None,
        before_commit: Callable[[Transaction], None] | None = None,
        tx: Transaction | None = None,
        owned: bool = False,
    ) -> EntryResult:
        """One interaction (a REST write) through the same path (fhir_server.store.apply)."""
        from fhir_server.store.apply import write

        return write(self, entry, actor, policy, before_commit, tx, owned)

    def read(self, res_type: str, res_id: str) -> StoredResource | None:
        """The current version, or a deleted marker, or None if the id was never used.

        The hottest call of the server, so it talks to the pooled DBAPI connection directly:
        SQLAlchemy's Connection and Result layers cost more than the query itself.
        """
        with self.dbapi_connection() as dbapi:
            cursor = dbapi.cursor()
            cursor.execute(self.sql.read, (res_type, res_id))
            row = cursor.fetchone()
            cursor.close()
        if row is None:
            return None
        return StoredResource(res_type, res_id, row[0], row[1], bool(row[2]), row[3])

    @contextmanager
    def dbapi_connection(self) -> Iterator[Any]:
        """A pooled DBAPI connection for reads that are plain SQL text (the read by id, the
        direct searches): no SQLAlchemy Connection, no transaction (autocommit on PostgreSQL,
        so no ROLLBACK round trip at return; none is begun on SQLite)."""
        dbapi = self.engine.raw_connection()
        driver: Any = dbapi.driver_connection
        try:
            if self.sql.postgres:
                driver.autocommit = True
            yield dbapi
        finally:
            if self.sql.postgres:
                driver.autocommit = False
            dbapi.close()  # back to the pool

    def vread(self, res_type: str, res_id: str, version_id: int) -> StoredResource | None:
        with self.connection() as conn:
            return _vread(conn, res_type, res_id, version_id)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for reads only: no explicit transaction on SQLite, autocommit on
        PostgreSQL (each saves the BEGIN/ROLLBACK round trips of a read transaction)."""
        with self.engine.connect() as conn:
            if self.sql.postgres:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                yield conn.execution_options(interop_read=True)

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A connection inside a write transaction, committed on normal exit (on SQLite,
        this process's writers take turns on one connection: `SqliteWriter`)."""
        if self._sqlite_writer is not None:
            with self._sqlite_writer.transaction() as conn:
                yield conn
        else:
            with write_transaction(self.engine) as conn:
                yield conn

    @contextmanager
    def transaction(
        self,
        actor: Actor | None = None,
        interaction: str | None = None,
        narrow: Narrow | None = None,
        before_commit: Callable[[Transaction], None] | None = None,
    ) -> Iterator[Transaction]:
        """One database transaction; commits on normal exit, rolls back on any exception.

        A change it made is audited before the commit, in the same transaction, naming
        `actor` (and `interaction`, or what it did); `before_commit` runs after that, also only
        when something changed. `narrow` limits its conditional searches to what the caller
        may see.
        """
        started = time.perf_counter()
        outcome = "rollback"
        try:
            with self.write_connection() as conn:
                tx = Transaction(self, conn)
                tx.narrow = narrow
                try:
                    yield tx
                    if tx.changes:
                        if self.audit is not None:
                            self.audit.record_change(tx, actor, interaction)
                        if before_commit is not None:
                            before_commit(tx)
                    tx.flush()
                finally:
                    # Closed here, in this thread: a Transaction is freed by the cyclic
                    # collector (it and its StoredConformance refer to each other), in
                    # whatever thread that runs, and a sqlite3 cursor freed open resets its
                    # last statement, the connection's cached one another writer may be
                    # executing at that moment ("bad parameter or other API misuse").
                    tx.cursor.close()
            outcome = "commit"
        finally:
            metrics.STORE_TRANSACTIONS.labels(outcome).inc()
            metrics.STORE_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        if tx.outbox_count:
            for listener in self.listeners:
                listener(tx.outbox_count)
            if self.change_listeners:
                changed = {res_type for res_type, _, _ in tx.changes}
                for change_listener in self.change_listeners:
                    change_listener(changed)


def identifier_condition(res_type: str, query: list[tuple[str, str]]) -> Identity | None:
    """(type, system or None, value) when a condition is exactly `identifier=[system|]value`,
    the form every mapper writes; None for anything else (left to the search compiler).
    The search limits apply as in the compiler (a NUL, say, is a 400, not a miss)."""
    limits.check_search(query)
    if len(query) != 1 or query[0][0] != "identifier":
        return None
    value = query[0][1]
    if not value or "," in value or "\\" in value or value.count("|") > 1:
        return None
    system, bar, code = value.partition("|")
    if bar and (not system or not code):  # `|code` and `system|`: the compiler's rules
        return None
    param = params_for(res_type).get("identifier")
    if param is None or param.type != "token":
        return None
    return (res_type, system, code) if bar else (res_type, None, value)


def _conditional(reference: str) -> bool:
    return "?" in reference and not reference.startswith(("http:", "https:"))


def _lock_key(identity: Identity) -> int:
    """A stable signed 64-bit key for an advisory lock on (type, system, value); a value
    with and without its system share the key, since both conditions find the same rows."""
    digest = hashlib.blake2b(f"{identity[0]}|{identity[2]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _vread(conn: Connection, res_type: str, res_id: str, version_id: int) -> StoredResource | None:
    row = conn.execute(
        select(V.last_updated, V.deleted, V.body, V.method).where(
            V.res_type == res_type, V.res_id == res_id, V.version_id == version_id
        )
    ).first()
    if row is None:
        return None
    return StoredResource(res_type, res_id, version_id, row[0], bool(row[1]), row[2], row[3])


class Transaction:
    """Writes inside one database transaction; rows for bulk tables are buffered and flushed
    together (before any query that must see them, and at commit)."""

    def __init__(self, store: Store, conn: Connection) -> None:
        self.store = store
        self.conn = conn
        self.outbox_count = 0
        self.sql = store.sql
        self.cursor = conn.connection.cursor()  # the DBAPI cursor, inside this transaction
        self._integrity_error = conn.dialect.dbapi.IntegrityError if conn.dialect.dbapi else ()
        self._versions: list[tuple[Any, ...]] = []
        self._outbox: list[tuple[Any, ...]] = []
        self.changes: list[tuple[str, str, str]] = []  # (type, id, interaction) written here
        self._index: dict[str, list[tuple[Any, ...]]] = {k: [] for k in INDEX_TABLES}
        # current rows fetched ahead by `prefetch` (None: known not to exist), until written
        self._known: dict[tuple[str, str], tuple[int, StoredResource] | None] = {}
        # keys allocated by `prefetch` for the new resources it found, whose rows then go in
        # with one COPY (PostgreSQL) or executemany (SQLite) at flush instead of one INSERT
        # each; on SQLite the highest key handed out so far (the table does not know them)
        self._free_pks: list[int] = []
        self._top_pk = 0
        self._new_resources: list[tuple[Any, ...]] = []
        # the caller's visibility (fhir_server.search.query.Narrow): the searches behind
        # conditional operations and references match only what it may see
        self.narrow: Narrow | None = None
        # conditional reference -> the ids it matched (see resolve_conditional_references)
        self._ref_ids: dict[str, list[str]] = {}
        # stored profiles and value sets, for validation (fhir_server.store.conformance)
        self.conformance = StoredConformance(
            conn, self.sql, store.base_url, self._flush_for_conformance, self.flush
        )
        self._wrote_conformance = False  # see _flush_for_conformance

    # -- reads inside the transaction -------------------------------------------------------

    def current(
        self, res_type: str, res_id: str, lock: bool = False
    ) -> tuple[int, StoredResource] | None:
        """(pk, current version) of a resource, locking its row on PostgreSQL when asked.

        No flush: the `resources` table is written immediately, only side tables are buffered.
        """
        key = (res_type, res_id)
        if key in self._known:
            return self._known.pop(key)
        if self._new_resources:
            self.flush()
        self.cursor.execute(
            self.sql.current_locked if lock else self.sql.current, (res_type, res_id)
        )
        row = self.cursor.fetchone()
        if row is None:
            return None
        return row[0], StoredResource(res_type, res_id, row[1], row[2], bool(row[3]), row[4])

    def prefetch(self, keys: list[tuple[str, str]], new: int = 0) -> None:
        """Fetch (and lock) the current rows of resources about to be written, in one query
        per type instead of one per resource: a 100-entry Bundle saves 99 round trips.
        `new`: how many resources will be created under ids this server just made up (a
        Bundle's POSTs), which need no look-up: keys for them and for the absent `keys` are
        allocated together, in one query."""
        by_type: dict[str, list[str]] = {}
        for res_type, res_id in keys:
            by_type.setdefault(res_type, []).append(res_id)
        absent = new
        for res_type, ids in by_type.items():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                self.cursor.execute(*self.sql.current_many(res_type, chunk))
                found = {row[1]: row for row in self.cursor.fetchall()}
                absent += sum(1 for res_id in chunk if res_id not in found)
                for res_id in chunk:
                    row = found.get(res_id)
                    self._known[(res_type, res_id)] = (
                        None
                        if row is None
                        else (
                            row[0],
                            StoredResource(res_type, res_id, row[2], row[3], bool(row[4]), row[5]),
                        )
                    )
        if absent:
            self._allocate_pks(absent)

    def _allocate_pks(self, count: int) -> None:
        """Keys for `count` new resources. PostgreSQL: from the table's sequence. SQLite: past
        the highest key in the table (or handed out already), which is what SQLite itself
        would assign next; this transaction holds the write lock, so no other writer can
        take them, and they are used in ascending order (as the rows come)."""
        if self.sql.postgres:
            self.cursor.execute(self.sql.allocate_pks, (count,))
            self._free_pks.extend(row[0] for row in self.cursor.fetchall())
            return
        self.cursor.execute("SELECT max(pk) FROM resources")
        top = max(self.cursor.fetchone()[0] or 0, self._top_pk)  # type: ignore[index]
        self._top_pk = top + count
        self._free_pks.extend(range(top + count, top, -1))  # popped from the end

    def ids_by_identifier(
        self, wanted: list[Identity], lock: bool = True
    ) -> dict[Identity, list[str]]:
        """Ids for many `Type?identifier=[system|]value` conditions (system None: any) in one
        query, as every mapped channel sends a Bundle of them; same rows and semantics as
        the search compiler. `lock`: hold each identity until commit (conditional creates)."""
        self.flush()
        found: dict[Identity, list[str]] = {w: [] for w in wanted}
        if not wanted:
            return found
        if self.sql.postgres and lock:
            # Two transactions creating the same identity at once would both find nothing
            # and both create: hold a lock per identity (in one global order, so no
            # deadlock) until commit. SQLite writers are serialised already.
            keys = sorted({_lock_key(w) for w in wanted})
            self.conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(%(keys)s::bigint[]) AS k ORDER BY k",
                {"keys": keys},
            )
        token = idx_token.c
        query = (
            select(token.res_type, token.system, token.code, R.res_id)
            .join(resources, R.pk == token.resource_pk)
            .where(
                token.param == "identifier",
                R.deleted == false(),
                or_(
                    *(
                        and_(
                            token.res_type == t,
                            _equals(token.code, v),
                            true() if s is None else _equals(token.system, s),
                            *(self.narrow(t, resources) if self.narrow else ()),
                        )
                        for t, s, v in set(wanted)
                    )
                ),
            )
        )
        for res_type, system, code, res_id in self.conn.execute(query):
            for key in ((res_type, system, code), (res_type, None, code)):
                ids = found.get(key)
                if ids is not None and res_id not in ids:
                    ids.append(res_id)
        return found

    def search_ids(self, res_type: str, query: list[tuple[str, str]]) -> list[str]:
        """Ids matching a search (among what `narrow` lets the caller see), for conditional
        writes and references."""
        from fhir_server.search.query import matching_ids

        self.flush()
        return matching_ids(self.conn, res_type, query, self.store.base_url, self.narrow)

    # -- writes -----------------------------------------------------------------------------

    def create(
        self,
        resource: dict[str, Any],
        res_id: str | None = None,
        trusted: bool = False,
        index: IndexRows | None = None,
        checked: bool = False,
        refs: list[dict[str, Any]] | None = None,
    ) -> WriteResult:
        """Store a new resource under a server-assigned id (or `res_id`, for create-on-update).

        `trusted` is for resources this server builds itself from a fixed shape (AuditEvents,
        one per request), with no conditional references: validation and reference
        resolution are skipped, and `index` may bring their index rows ready-made. Their
        builders' tests validate the shape and the rows instead. `checked`: the content was
        part of a request body that passed `limits.check_document` (see `validate_resource`).
        `refs`: the content's Reference objects when the caller found them already.
        """
        if res_id:
            self._known.pop((resource.get("resourceType", ""), res_id), None)
        res_id = res_id or str(uuid.uuid4())
        if not trusted:
            resource = validate_resource(resource, None, self.conformance, checked)
            self.resolve_conditional_references(resource, refs)
            self._content_hook(resource["resourceType"], res_id, resource)
        return self._insert_new(resource, resource["resourceType"], res_id, "POST", index)

    def update(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        if_match: int | None = None,
        method: str = "PUT",
        checked: bool = False,
        refs: list[dict[str, Any]] | None = None,
    ) -> WriteResult:
        """Replace a resource (creating it when the id is new, which FHIR allows); `refs`: the
        content's Reference objects when the caller found them already."""
        resource = validate_resource(resource, res_type, self.conformance, checked)
        if res_type in self.store.content_hooks:
            refs = None  # the hook may change the content before its references resolve
        if resource.get("id") != res_id:
            raise bad_request(
                f"The resource id '{resource.get('id')}' does not match the URL id '{res_id}'",
                ["id"],
            )
        self._content_hook(res_type, res_id, resource)
        found = self.current(res_type, res_id, lock=True)
        if found is None:
            if if_match is not None:
                raise precondition_failed(f"{res_type}/{res_id} does not exist (If-Match given)")
            self.resolve_conditional_references(resource, refs)
            return self._insert_new(resource, res_type, res_id, method)
        pk, current = found
        if if_match is not None and if_match != current.version_id:
            raise precondition_failed(
                f"Version conflict: If-Match {if_match} but {res_type}/{res_id} is at "
                f"version {current.version_id}"
            )
        self.resolve_conditional_references(resource, refs)
        if not current.deleted and current.body and _same_content(current.body, resource):
            return WriteResult(current, created=False, changed=False)
        stored = self._new_version(resource, res_type, res_id, current.version_id + 1, method)
        self._replace_row(pk, stored, current)
        self._record(pk, stored, resource, "update" if method == "PUT" else "patch")
        return WriteResult(stored, created=current.deleted)

    def delete(self, res_type: str, res_id: str) -> StoredResource | None:
        """Mark a resource deleted (a new, empty version); None when there was nothing to delete."""
        if res_type in CONFORMANCE_TYPES:
            self._wrote_conformance = True
            profiles().changed()
        found = self.current(res_type, res_id, lock=True)
        if found is None or found[1].deleted:
            return None
        pk, current = found
        stamp = now_us()
        stored = StoredResource(
            res_type, res_id, current.version_id + 1, stamp, True, None, "DELETE"
        )
        self._replace_row(pk, stored, current)
        self._versions.append(_version_row(stored))
        self._append_outbox(stored, "delete")
        return stored

    # -- references -------------------------------------------------------------------------

    def prefetch_references(
        self, resources: list[Any], refs: Sequence[list[dict[str, Any]] | None] = ()
    ) -> None:
        """Look up the identifier-form conditional references of many resources in one
        query (a Synthea Bundle names ~60 resources ~450 times), memoized for
        `resolve_conditional_references`. `refs`: each resource's Reference objects, when
        the caller found them already (None for one it did not)."""
        wanted: dict[str, Identity] = {}
        for index, resource in enumerate(resources):
            known = refs[index] if index < len(refs) else None
            for ref in known if known is not None else _references(resource):
                value = ref["reference"]
                if _conditional(value) and value not in wanted and value not in self._ref_ids:
                    res_type, _, query = value.partition("?")
                    key = identifier_condition(res_type, parse_qsl(query, keep_blank_values=True))
                    if key is not None:
                        wanted[value] = key
        if not wanted:
            return
        found = self.ids_by_identifier(list(set(wanted.values())), lock=False)
        for value, key in wanted.items():
            self._ref_ids[value] = list(found[key])

    def resolve_conditional_references(
        self, resource: dict[str, Any], refs: list[dict[str, Any]] | None = None
    ) -> None:
        """Replace `Type?search` references by the one resource they match (FHIR 3.1.0.8.1);
        `refs`: the content's Reference objects, when the caller found them already.

        Answers are memoized for the transaction until it writes a resource of the type
        they name (a write could change what matches)."""
        for ref in refs if refs is not None else _references(resource):
            value = ref.get("reference")
            if not isinstance(value, str) or not _conditional(value):
                continue
            res_type, _, query_string = value.partition("?")
            ids = self._ref_ids.get(value)
            if ids is None:
                ids = self.search_ids(res_type, parse_qsl(query_string, keep_blank_values=True))
                self._ref_ids[value] = ids
            if len(ids) != 1:
                raise FhirError(
                    412 if ids else 404,
                    f"Conditional reference '{value}' matched {len(ids)} resources; it must "
                    "match exactly one",
                    "not-found" if not ids else "multiple-matches",
                )
            ref["reference"] = f"{res_type}/{ids[0]}"

    # -- internals --------------------------------------------------------------------------

    def _flush_for_conformance(self) -> None:
        """Before a lookup of stored profiles and value sets: only conformance resources this
        transaction wrote can be among its buffered rows and change the answer. Without
        them nothing is flushed: a flush in the middle of a Bundle (a profile's cache
        recheck) would split its COPY and cost a round trip per table."""
        if self._wrote_conformance:
            self.flush()

    def _content_hook(self, res_type: str, res_id: str, resource: dict[str, Any]) -> None:
        if res_type in CONFORMANCE_TYPES:
            self._wrote_conformance = True
            profiles().changed()  # a stored profile or value set takes effect at once
        hook = self.store.content_hooks.get(res_type)
        if hook is not None:
            hook(self, res_id, resource)

    def _insert_new(
        self,
        resource: dict[str, Any],
        res_type: str,
        res_id: str,
        method: str,
        index: IndexRows | None = None,
    ) -> WriteResult:
        stored = self._new_version(resource, res_type, res_id, 1, method)
        row = (res_type, res_id, 1, stored.last_updated, False, stored.body)
        if self._free_pks:
            pk = self._free_pks.pop()
            self._new_resources.append((pk, *row))
            self._record(pk, stored, resource, "create", index)
            return WriteResult(stored, created=True)
        if self._new_resources and not self.sql.postgres:
            self.flush()  # SQLite picks the next key from the rows it has: give it them all
        try:
            self.cursor.execute(self.sql.insert_resource, row)
            pk = self.cursor.fetchone()[0]  # type: ignore[index]  # RETURNING gives one row
        except self._integrity_error:
            raise conflict(f"{res_type}/{res_id} was created concurrently; retry") from None
        self._record(pk, stored, resource, "create", index)
        return WriteResult(stored, created=True)

    def _new_version(
        self, resource: dict[str, Any], res_type: str, res_id: str, version: int, method: str
    ) -> StoredResource:
        stamp = now_us()
        resource["id"] = res_id
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = to_instant(stamp)
        resource["meta"] = meta
        body = fhirjson.dumps(resource)
        return StoredResource(res_type, res_id, version, stamp, False, body, method)

    def _record(
        self,
        pk: int,
        stored: StoredResource,
        resource: dict[str, Any],
        interaction: str,
        index: IndexRows | None = None,
    ) -> None:
        self._versions.append(_version_row(stored))
        rows = index if index is not None else extract(resource, self.store.base_url)
        res_type = stored.res_type
        for kind, buffer in self._index.items():
            values = getattr(rows, kind)
            if values:  # an index row: owner pk, owner type, then (param, *kind's columns)
                buffer.extend((pk, res_type, *value) for value in values)
        self._append_outbox(stored, interaction)

    def _replace_row(self, pk: int, stored: StoredResource, previous: StoredResource) -> None:
        """Make `stored` the current version of row `pk` and drop the index rows of the
        previous version: in the tables its type can use (none when it was a deletion,
        which cleared them). PostgreSQL: one statement (`Statements.replace_row`)."""
        self.flush()
        kinds: tuple[str, ...] = tuple(INDEX_TABLES)
        if previous.deleted:
            kinds = ()
        elif previous.body:
            possible = index_kinds(previous.res_type)
            kinds = tuple(k for k in INDEX_TABLES if k in possible)
        row = (stored.version_id, stored.last_updated, stored.deleted, stored.body, pk)
        if self.sql.postgres:
            self.cursor.execute(self.sql.replace_row(kinds), (*row, *(pk,) * len(kinds)))
            return
        self.cursor.execute(self.sql.update_resource, row)
        for kind in kinds:
            self.cursor.execute(self.sql.clear_index[kind], (pk,))

    def _pipeline(self) -> AbstractContextManager[Any]:
        """PostgreSQL: send the statements of the block in one round trip."""
        if self.sql.postgres:
            driver: Any = self.conn.connection.driver_connection
            return driver.pipeline()  # type: ignore[no-any-return]
        return nullcontext()

    def _append_outbox(self, stored: StoredResource, interaction: str) -> None:
        self.changes.append((stored.res_type, stored.res_id, interaction))
        if self._ref_ids:  # what a conditional reference to this type matches may change
            prefix = stored.res_type + "?"
            for value in [v for v in self._ref_ids if v.startswith(prefix)]:
                del self._ref_ids[value]
        self._outbox.append(
            (
                stored.res_type,
                stored.res_id,
                stored.version_id,
                interaction,
                stored.last_updated,
                None,
            )
        )

    def flush(self) -> None:
        """Write the buffered rows: per table one executemany (SQLite), one COPY (PostgreSQL,
        large batches) or, for the few rows of a single REST write, all the tables' INSERTs in
        one PostgreSQL pipeline, so one round trip instead of one per table."""
        buffered = self._versions or self._new_resources or self._outbox
        if not buffered and not any(self._index.values()):  # most calls (before each read)
            return
        batches: list[tuple[tuple[str, str], list[tuple[Any, ...]]]] = [
            (self.sql.insert_new_resources, self._new_resources),
            (self.sql.insert_version, self._versions),
            *((self.sql.insert_index[kind], rows) for kind, rows in self._index.items()),
            (self.sql.insert_outbox, self._outbox),
        ]
        pending = sum(map(len, (rows for _, rows in batches)))
        try:
            if not self.sql.postgres:
                for (insert, _), rows in batches:
                    if rows:
                        self.cursor.executemany(insert, rows)
            elif pending < 200:
                with self._pipeline():
                    for (insert, _), rows in batches:
                        if rows:
                            self.cursor.executemany(insert, rows)
            else:
                for (_, copy_sql), rows in batches:
                    if rows:
                        with self.cursor.copy(copy_sql) as copy:
                            for row in rows:
                                copy.write_row(row)
        except self._integrity_error:
            raise conflict(
                "A resource of this transaction was created concurrently; retry"
            ) from None
        self.outbox_count += len(self._outbox)
        self._new_resources, self._versions, self._outbox = [], [], []
        self._index = {k: [] for k in INDEX_TABLES}


def _version_row(stored: StoredResource) -> tuple[Any, ...]:
    """A `resource_versions` row, in the table's column order (see Statements)."""
    return (
        stored.res_type,
        stored.res_id,
        stored.version_id,
        stored.last_updated,
        stored.deleted,
        stored.method,
        stored.body,
    )


def _same_content(old_body: bytes, new: dict[str, Any]) -> bool:
    """An update that changes nothing but meta keeps the version (no history noise)."""
    old = fhirjson.loads(old_body)
    old_meta = {
        k: v
        for k, v in (old.pop("meta", None) or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    new_meta = {
        k: v for k, v in (new.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    rest = {k: v for k, v in new.items() if k != "meta"}
    return old == rest and old_meta == new_meta


def _references(node: Any) -> list[dict[str, Any]]:
    """Every dict with a string `reference` key (a Reference datatype), depth first in
    document order (one loop over a stack: a recursive generator costs a frame per level)."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                found.append(item)
            children = [v for v in item.values() if isinstance(v, dict | list)]
        elif isinstance(item, list):
            children = [v for v in item if isinstance(v, dict | list)]
        else:
            continue
        if children:
            children.reverse()
            stack.extend(children)
    return found


def history_rows(
    conn: Connection,
    res_type: str | None,
    res_id: str | None,
    since: int | None,
    at_or_before: int | None,
    limit: int,
    offset: int,
    where: Sequence[ColumnElement[bool]] = (),
) -> tuple[int, list[StoredResource]]:
    """Versions newest first, for instance, type and system history (within `where`)."""
    from sqlalchemy import func

    conds = list(where)
    if res_type:
        conds.append(V.res_type == res_type)
    if res_id:
        conds.append(V.res_id == res_id)
    if since is not None:
        conds.append(V.last_updated >= since)
    if at_or_before is not None:
        conds.append(V.last_updated <= at_or_before)
    condition = and_(*conds) if conds else None
    count_q = select(func.count()).select_from(resource_versions)
    rows_q = select(
        V.res_type, V.res_id, V.version_id, V.last_updated, V.deleted, V.body, V.method
    ).order_by(V.last_updated.desc(), V.pk.desc())
    if condition is not None:
        count_q = count_q.where(condition)
        rows_q = rows_q.where(condition)
    total = conn.execute(count_q).scalar_one()
    rows = conn.execute(rows_q.limit(limit).offset(offset)).all()
    return total, [StoredResource(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]
