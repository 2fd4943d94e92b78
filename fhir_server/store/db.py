"""Engine creation and migrations, the same for the embedded SQLite file and PostgreSQL."""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("interop.store")


def create_db_engine(url: str, pool_size: int = 10, statement_timeout_ms: int = 0) -> Engine:
    """An engine tuned per backend: SQLite in WAL mode, PostgreSQL through psycopg 3.

    `statement_timeout_ms` bounds every statement on PostgreSQL (`statement_timeout`; the
    API's engine sets it, so no request keeps a query running after its client gave up);
    on SQLite the progress handler interrupts statements run inside `limits.deadline()`.
    Work that may legitimately run long (migrations, ANALYZE, bulk export) lifts it with
    `unbounded`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if parsed.database and parsed.database != ":memory:":
            Checkpointer(parsed.database).install(engine)
        if statement_timeout_ms > 0:
            event.listen(engine, "connect", _sqlite_progress_handler)
        # pysqlite's own transaction handling defers BEGIN; take it over so each repository
        # transaction starts with BEGIN IMMEDIATE (no lock upgrade deadlocks between writers).
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        # psycopg prepares a statement after its 5th use; PostgreSQL then switches to a generic
        # plan, which cannot see how selective a search value is and scans. Custom plans only.
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )
    if statement_timeout_ms > 0:
        # set once per new pooled connection, after SQLAlchemy's own first-connect queries
        event.listen(engine, "connect", statement_timeout(statement_timeout_ms))
    return engine


def statement_timeout(milliseconds: int) -> Any:
    """A PostgreSQL "connect" listener: every statement of the connection is bounded."""

    def set_timeout(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET statement_timeout = {int(milliseconds)}")
        cursor.close()
        dbapi_conn.commit()

    return set_timeout


def unbounded(conn: Connection) -> None:
    """Lift the statement timeout for the rest of this transaction (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")


def _sqlite_progress_handler(dbapi_conn: Any, _record: Any) -> None:
    from fhir_server.limits import sqlite_progress_handler

    dbapi_conn.set_progress_handler(sqlite_progress_handler, 10_000)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA analysis_limit=1000")
    cursor.close()


class Checkpointer:
    """Copies an SQLite file's write-ahead log into the database from a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 log pages (every
    ~50 REST writes), and with it the two fsyncs of the checkpoint: that commit then takes
    10-20 ms instead of 0.1, all the while holding the write lock every other writer waits
    for (under mixed CRUD, ~85 % of all time spent in COMMIT). The engine's connections turn
    it off (`wal_autocheckpoint=0`) and this thread runs a PASSIVE checkpoint, which never
    takes the write lock, every INTERVAL seconds while the engine has connections.
    """

    INTERVAL = 0.5

    def __init__(self, path: str) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def install(self, engine: Engine) -> None:
        event.listen(engine, "connect", self._connected)
        event.listen(engine, "engine_disposed", lambda _engine: self.stop())
        weakref.finalize(engine, self.stop)

    def _connected(self, dbapi_conn: Any, _record: Any) -> None:
        """A new pooled connection: no checkpoint in its commits; this thread runs them."""
        self.ensure_running()
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and not self._stop.is_set():
            return
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and not self._stop.is_set():
                return
            stopped = threading.Event()  # each thread has its own, so a restart never races
            self._stop = stopped
            self._thread = threading.Thread(
                target=self._run, args=(stopped,), name="sqlite-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Let the thread finish (a last checkpoint) and close its connection."""
        self._stop.set()

    def _run(self, stopped: threading.Event) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not stopped.wait(self.INTERVAL):
                self.checkpoint(conn)
            self.checkpoint(conn)
        finally:
            conn.close()

    @staticmethod
    def checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:  # a missing file (a test's removed directory), a full disk
            log.warning("SQLite checkpoint failed", exc_info=True)


def _sqlite_begin(conn: Any) -> None:
    """Writers take the write lock up front (BEGIN IMMEDIATE); readers never block on it.

    Connections marked `interop_read` (single reads and searches) skip BEGIN altogether: each
    statement is then its own snapshot, which saves two round trips per request.
    """
    options = conn.get_execution_options()
    if options.get("interop_read"):
        return
    # straight on the driver connection: SQLAlchemy's statement machinery (events, result
    # object) costs several times the BEGIN itself, once per write transaction
    conn.connection.driver_connection.execute(
        "BEGIN IMMEDIATE" if options.get("interop_write") else "BEGIN"
    )


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front (BEGIN
    IMMEDIATE), so reading first and writing later cannot fail with "database is locked"
    when another writer got in between; a busy lock is waited for instead."""
    with engine.connect() as conn:
        conn = conn.execution_options(interop_write=True)
        with conn.begin():
            yield conn


class SqliteWriter:
    """This process's SQLite write transactions, one at a time, on one held connection.

    SQLite allows one writer at a time. Threads queue on a lock instead of on SQLite's busy
    handler, which sleeps in growing steps (up to 100 ms) while it waits: under concurrent
    writes that sleeping, not the work, would set the latency. They share one connection:
    a connection's page cache is dropped whenever another connection wrote, so writers
    taking turns on the pool's connections re-read every B-tree page they touch from the
    OS each time (a third of a REST write's system time), and the pool checkout, return
    and reset cost as much as the BEGIN. `engine.dispose()` closes it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self._conn: Connection | None = None
        self._disposed = False
        event.listen(engine, "engine_disposed", self._dispose)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.lock:
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._conn = self.engine.connect().execution_options(interop_write=True)
            try:
                with conn.begin():
                    yield conn
            finally:
                if self._disposed:
                    self._close()

    def _dispose(self, _engine: Engine) -> None:
        """The pool was emptied: close the held connection too (at once when no write is
        under way, else when that write ends; the next write opens a new one)."""
        self._disposed = True
        if self.lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self.lock.release()

    def _close(self) -> None:
        self._disposed = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# pg_advisory_xact_lock key of the migrations: "interop" + "migrate" as one bigint
MIGRATION_LOCK = 0x696E7465726F70


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (`interop db upgrade`, and `serve` at start).

    Replicas and workers started together all call this: on PostgreSQL the first takes an
    advisory lock for its transaction (DDL is transactional there), the others wait for it,
    then find the schema current and go on. On SQLite the migration's write transaction is
    the lock."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with write_transaction(engine) as conn:  # SQLite: BEGIN IMMEDIATE, the writer's lock
        unbounded(conn)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def schema_revisions(engine: Engine) -> tuple[set[str], set[str]]:
    """(the database's migration heads, the newest this code knows); empty: never migrated.
    Reads only: `interop db current|check` and read-only commands never migrate."""
    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current, set(script.get_heads())


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (for /readyz)."""
    current, newest = schema_revisions(engine)
    return current == newest
