"""PostgreSQL reads awaited on the event loop (fhir_server.store.async_reads): the same rows as
the store's own read, errors as psycopg raises them, and a pool that survives broken
connections, cancelled callers and a new event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from store_support import own_database

from fhir_server.store.apply import Entry
from fhir_server.store.async_reads import AsyncReads
from fhir_server.store.db import create_db_engine, upgrade
from fhir_server.store.repository import Store


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with own_database("postgresql", prefix="interop_async_reads") as url:
        engine = create_db_engine(url, 2)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def store(engine: Engine) -> Store:
    store = Store(engine, "http://testserver/fhir")
    for pid in ("a", "b", "gone"):
        store.write(Entry("PUT", "Patient", pid, resource=_patient(pid)))
    store.write(Entry("DELETE", "Patient", "gone"))
    return store


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f"F{pid}"}]}


def test_a_read_is_the_stores_read(store: Store) -> None:
    async def reads() -> list[Any]:
        pool = AsyncReads(store.engine, 2)
        try:
            return [await pool.read("Patient", pid) for pid in ("a", "gone", "never")]
        finally:
            await pool.close()

    found, gone, never = asyncio.run(reads())
    assert found is not None and found == store.read("Patient", "a")  # the stored bytes too
    assert gone == store.read("Patient", "gone") and gone.deleted and gone.body is None
    assert never is None


def test_rows_take_question_marks_strings_and_integers(store: Store) -> None:
    sql = "SELECT res_id, version_id FROM resources WHERE res_type = ? ORDER BY res_id LIMIT ?"

    async def rows() -> list[tuple[Any, ...]]:
        pool = AsyncReads(store.engine, 1)
        try:
            return await pool.rows(sql, ["Patient", 2])
        finally:
            await pool.close()

    assert asyncio.run(rows()) == [("a", 1), ("b", 1)]


def test_more_callers_than_connections_all_get_their_rows(store: Store) -> None:
    async def many() -> tuple[list[Any], int]:
        pool = AsyncReads(store.engine, 2)
        try:
            found = await asyncio.gather(*(pool.read("Patient", "ab"[i % 2]) for i in range(40)))
            return found, pool._open
        finally:
            await pool.close()

    found, opened = asyncio.run(many())
    assert [f.res_id for f in found] == ["ab"[i % 2] for i in range(40)]
    assert opened == 2


def test_a_statement_over_the_time_limit_is_cancelled_and_the_connection_kept(
    store: Store,
) -> None:
    async def slow() -> tuple[BaseException | None, Any, int]:
        pool = AsyncReads(store.engine, 1, statement_timeout_ms=50)
        try:
            try:
                await pool.rows("SELECT pg_sleep(2)", [])
                error = None
            except psycopg.Error as exc:
                error = exc
            return error, await pool.read("Patient", "a"), pool._open
        finally:
            await pool.close()

    error, after, opened = asyncio.run(slow())
    assert isinstance(error, psycopg.errors.QueryCanceled)  # `limits.database_error`: a 503
    assert after is not None and after.res_id == "a"
    assert opened == 1


def test_a_broken_connection_is_replaced(store: Store) -> None:
    async def broken() -> Any:
        pool = AsyncReads(store.engine, 1)
        try:
            await pool.read("Patient", "a")
            (pid,) = (await pool.rows("SELECT pg_backend_pid()", []))[0]
            with store.dbapi_connection() as dbapi:
                cursor = dbapi.cursor()
                cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
                cursor.close()
            await asyncio.sleep(0.1)  # the server closes that session
            return await pool.read("Patient", "b")
        finally:
            await pool.close()

    assert asyncio.run(broken()).res_id == "b"


def test_a_cancelled_caller_does_not_take_a_connection_with_it(store: Store) -> None:
    async def cancelled() -> tuple[Any, int]:
        pool = AsyncReads(store.engine, 1)
        try:
            slow = asyncio.ensure_future(pool.rows("SELECT pg_sleep(5)", []))
            waiting = asyncio.ensure_future(pool.read("Patient", "a"))  # queued behind it
            await asyncio.sleep(0.2)
            slow.cancel()
            waiting.cancel()
            await asyncio.gather(slow, waiting, return_exceptions=True)
            return await asyncio.wait_for(pool.read("Patient", "b"), 5), pool._open
        finally:
            await pool.close()

    after, opened = asyncio.run(cancelled())
    assert after.res_id == "b"
    assert opened <= 1


def test_a_new_event_loop_gets_new_connections(store: Store) -> None:
    pool = AsyncReads(store.engine, 1)
    first = asyncio.run(pool.read("Patient", "a"))
    second = asyncio.run(pool.read("Patient", "b"))  # the first loop's connection is unusable
    asyncio.run(pool.close())
    assert first is not None and second is not None
    assert (first.res_id, second.res_id) == ("a", "b")


def test_after_a_stalled_send_the_loop_is_not_wanted_for_a_while(store: Store) -> None:
    pool = AsyncReads(store.engine, 1)
    assert pool.stalled(2 * pool.STALL, 0.0)  # the process got no core meanwhile
    assert not pool.stalled(2 * pool.STALL, 1.5 * pool.STALL)  # another thread had the GIL
    assert not pool.stalled(pool.STALL / 2, 0.0)  # not slow
    pool.stalled = lambda wall, cpu: True  # type: ignore[method-assign]  # this send stalled
    assert pool.wanted(time.perf_counter())
    asyncio.run(pool.read("Patient", "a"))
    now = time.perf_counter()
    assert not pool.wanted(now)  # the callers use their threads meanwhile
    assert pool.wanted(now + pool.BACKOFF)
    asyncio.run(pool.close())
