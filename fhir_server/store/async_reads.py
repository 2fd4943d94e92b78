"""PostgreSQL reads awaited on the event loop, over a small pool of connections of its own.

A read by id (or a direct search) costs PostgreSQL little. On the server, handing it to a
worker thread and back (a queue, a thread wake-up, the GIL, a wake-up of the loop) and
SQLAlchemy's pool cost about half of a read's CPU, and psycopg's `AsyncCursor` would cost
as much again (~80 us a query here: its lock, adaptation and per-wait timer). So the
statement goes out through
psycopg's libpq wrapper (`pgconn`) straight from the event loop, its rows are converted by
psycopg's loaders, and the loop serves other requests until the socket has the answer: about
20 us of CPU a query. Nothing is cached: every call asks the database, so replicas sharing it
never serve what another one has since changed.

The pool is small (one connection answers one statement at a time, but the loop keeps each
busy), belongs to one event loop, and starts afresh when used from another (a test client's).
Statements are prepared once per connection (parsed once), and planned for their values at
every execution, as the engine's are (`store.db`: a generic plan cannot see how selective a
search value is).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result
from sqlalchemy import Engine

from fhir_server.clock import mostly_waited
from fhir_server.store.repository import Statements, StoredResource

log = logging.getLogger("interop.store")

BINARY = 1  # result format: integers, booleans and bytea arrive as they are stored
PREPARED = 200  # statements prepared per connection (the direct searches' shapes are few)
_MARK = re.compile(r"\?|%s")


@lru_cache(maxsize=512)
def _numbered(sql: str) -> bytes:
    """A statement with `?` or `%s` marks in libpq's `$1, $2, ...` form (once per text: the
    direct searches repeat a few shapes)."""
    numbered = iter(range(1, sql.count("?") + sql.count("%s") + 1))
    return _MARK.sub(lambda _: f"${next(numbered)}", sql).encode()


READ_SQL = _numbered(Statements("postgresql", "format").read)  # the one read-by-id statement


class _Connection:
    """One connection, driven at the libpq level (`pgconn`) from the event loop."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.pgconn.nonblocking = 1
        self.loader = Transformer(conn)
        self.prepared: dict[bytes, bytes] = {}  # statement -> its name on this connection
        self.sent = (0.0, 0.0)  # (wall, process CPU) seconds the last statement took to send

    async def query(self, sql: bytes, params: Sequence[bytes | None]) -> list[tuple[Any, ...]]:
        pgconn = self.pgconn
        name = self.prepared.get(sql)
        if name is None and len(self.prepared) < PREPARED:
            name = b"interop_%d" % len(self.prepared)
            pgconn.send_prepare(name, sql)
            await self._result()
            self.prepared[sql] = name
        if name is None:  # a connection that saw many different searches: parsed each time
            pgconn.send_query_params(sql, params, None, None, BINARY)
        else:
            began, cpu = time.perf_counter(), time.process_time()
            pgconn.send_query_prepared(name, params, None, BINARY)
            self.sent = (time.perf_counter() - began, time.process_time() - cpu)
        result = await self._result()
        self.loader.set_pgresult(result)
        return self.loader.load_rows(0, result.ntuples, tuple)

    async def _result(self) -> pq.abc.PGresult:
        """The statement's result once the server is ready for the next one; its error
        raised as psycopg raises it (a cancelled statement is `QueryCanceled`)."""
        pgconn = self.pgconn
        while pgconn.flush():  # 1: the kernel's buffer is full, more to send
            await self._ready(writer=True)
        result = None
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                found = pgconn.get_result()
                if found is None:  # the end of this statement's results
                    if result is None:
                        raise psycopg.OperationalError("no result from the server")
                    if result.status == pq.ExecStatus.FATAL_ERROR:
                        raise error_from_result(result, self.conn.info.encoding)
                    return result
                if result is None or found.status == pq.ExecStatus.FATAL_ERROR:
                    result = found
            await self._ready()

    async def _ready(self, writer: bool = False) -> None:
        loop = asyncio.get_running_loop()
        fd = self.pgconn.socket
        ready: asyncio.Future[None] = loop.create_future()
        if writer:
            loop.add_writer(fd, _wake, ready)
        else:
            loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            if writer:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    def reusable(self) -> bool:
        """Connected and between statements (not left mid-statement by a cancelled caller)."""
        return self.pgconn.transaction_status == pq.TransactionStatus.IDLE

    def broken(self) -> bool:
        return self.pgconn.status == pq.ConnStatus.BAD

    def close(self) -> None:
        self.pgconn.finish()  # no round trip: the server ends the session when it sees EOF


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class AsyncReads:
    """Reads by id and direct searches on PostgreSQL, awaited on the running event loop.

    Sending a statement releases the GIL; while another thread of the process is busy (a
    backlog of outbox work, say) the loop may wait for it that long, and with it every
    request. After a send that took longer than STALL seconds, `wanted` says no for BACKOFF
    seconds (the callers use their worker threads meanwhile, which wait side by side), as
    the SQLite reads on the loop do (interop.app.InlineReads).
    """

    STALL = 0.002
    BACKOFF = 1.0

    def __init__(self, engine: Engine, size: int = 2, statement_timeout_ms: int = 0) -> None:
        _, params = engine.dialect.create_connect_args(engine.url)  # the engine's own URL
        options = "-c plan_cache_mode=force_custom_plan"  # as the engine's (store.db)
        if statement_timeout_ms > 0:
            options += f" -c statement_timeout={int(statement_timeout_ms)}"
        self._params = {**params, "options": options, "autocommit": True}
        self.size = max(1, size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or opening, idle or in use
        self._waiting: collections.deque[asyncio.Future[_Connection | None]]
        self._waiting = collections.deque()
        self.threads_until = 0.0

    def wanted(self, now: float) -> bool:
        """Whether to await reads on the loop now (no stalled send lately)."""
        return now >= self.threads_until

    def stalled(self, wall: float, cpu: float) -> bool:
        """A send slower than STALL while the process got no core. One that waited for the
        GIL while another thread of this process ran (the AuditEvent writer's drain, a
        search on a thread) is not: the threads would wait for the same GIL, and backing
        off after each such wait kept reads off the loop under load."""
        return wall > self.STALL and mostly_waited(wall, cpu)

    async def read(self, res_type: str, res_id: str) -> StoredResource | None:
        """As `Store.read`: the current version, a deleted marker, or None."""
        rows = await self._rows(READ_SQL, (res_type.encode(), res_id.encode()))
        if not rows:
            return None
        version_id, last_updated, deleted, body = rows[0]
        return StoredResource(res_type, res_id, version_id, last_updated, deleted, body)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """All rows of one statement with `?` (or `%s`) marks, its parameters strings or
        integers (sent as text, typed by the server from where they stand)."""
        return await self._rows(_numbered(sql), [_text(p) for p in params])

    async def _rows(self, sql: bytes, params: Sequence[bytes | None]) -> list[tuple[Any, ...]]:
        """A connection that broke while idle (the server restarted, say) is dropped and the
        statement tried once more on a new one; an interrupted one is not reused."""
        for attempt in (1, 2):
            conn = await self._take()
            try:
                rows = await conn.query(sql, params)
            except psycopg.OperationalError:
                broken = conn.broken()
                self._give_back(conn)  # or drop it, when broken or mid-statement
                if not broken or attempt == 2:
                    raise  # a statement refused (over its time limit, say): not retried
                log.warning("a pooled PostgreSQL connection was broken; trying a new one")
                continue
            except BaseException:
                self._give_back(conn)
                raise
            self._give_back(conn)
            if self.stalled(*conn.sent):
                self.threads_until = time.perf_counter() + self.BACKOFF
            return rows
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the idle connections (those in use close when given back)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.close()

    async def _take(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._forget(loop)
        while True:
            if self._idle:
                return self._idle.pop()
            if self._open < self.size:
                self._open += 1
                try:
                    return _Connection(await psycopg.AsyncConnection.connect(**self._params))
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over, then cancelled
                    handed = waiter.result()
                    if handed is None:
                        self._wake_one()
                    else:
                        self._give_back(handed)
                raise
            if conn is not None:
                return conn  # else a connection closed: open one in its place

    def _give_back(self, conn: _Connection) -> None:
        if not conn.reusable():
            self._drop(conn)
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not cancelled meanwhile
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A connection closed: the first waiter (if any) may open one in its place."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        """Another event loop: the connections and waiters of the old one are not usable."""
        for conn in self._idle:
            conn.close()
        self._idle, self._open, self._waiting = [], 0, collections.deque()
        self._loop = loop


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"unsupported search parameter value {type(value).__name__}")
