"""The one work machinery (fhir_server.store.work) on SQLite and PostgreSQL: claimed rows go
to one claimer, a dead holder's work moves on once its lease runs out, one leader per
singleton, and migrations started together do not trip over each other."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table
from store_support import own_database

from fhir_server.store.db import create_db_engine, schema_is_current, upgrade
from fhir_server.store.work import Leases, WorkQueue
from interop.services import Loop, Singleton

jobs_meta = MetaData()
jobs = Table(
    "work_test_jobs",
    jobs_meta,
    Column("pk", Integer, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("owner", String(128), nullable=True),
    Column("until", BigInteger, nullable=True),
)
QUEUE = WorkQueue(jobs, "pk", "owner", "until")


@pytest.fixture
def engine(app):  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    jobs_meta.drop_all(engine)
    jobs_meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(jobs.insert(), [{"pk": i, "status": "queued"} for i in range(1, 41)])
    yield engine
    jobs_meta.drop_all(engine)


def test_concurrent_claimers_get_disjoint_rows(engine) -> None:  # type: ignore[no-untyped-def]
    got: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        mine: list[int] = []
        while batch := QUEUE.claim(engine, name, 30, [jobs.c.status == "queued"], limit=3):
            mine += batch
        got[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [pk for rows in got.values() for pk in rows]
    assert sorted(every) == list(range(1, 41))  # each row claimed, by exactly one claimer


def test_a_dead_holders_rows_move_on_after_its_lease(engine) -> None:  # type: ignore[no-untyped-def]
    assert QUEUE.claim(engine, "dead", 0.3, [jobs.c.pk == 1]) == [1]
    assert QUEUE.claim(engine, "alive", 30, [jobs.c.pk == 1]) == []  # still held
    time.sleep(0.4)
    assert QUEUE.claim(engine, "alive", 30, [jobs.c.pk == 1]) == [1]  # its lease ran out
    assert not QUEUE.renew(engine, [1], "dead", 30)  # the old holder learns it lost it
    assert QUEUE.renew(engine, [1], "alive", 30)
    assert QUEUE.release(engine, [1], "alive", status="done") == 1
    assert QUEUE.claim(engine, "alive", 30, [jobs.c.pk == 1, jobs.c.status == "queued"]) == []


def test_one_holder_per_lease_and_takeover_after_it_runs_out(app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    one, two = Leases(engine), Leases(engine)
    name = f"test:{uuid.uuid4().hex}"
    assert one.acquire(name, 0.5)
    assert not two.acquire(name, 0.5)
    assert one.acquire(name, 0.5)  # renewing
    time.sleep(0.6)
    assert two.acquire(name, 30)  # one stopped renewing (crashed)
    assert not one.holds(name) and two.holds(name)
    two.release(name)
    assert one.acquire(name, 30)  # handed back at once


def test_a_singleton_runs_on_one_process_and_fails_over(app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    ran: list[str] = []

    def step(name: str) -> Callable[[], None]:
        return lambda: ran.append(name)

    singletons = [
        Singleton(Loop("test-singleton", step(n), 0.05), Leases(engine), 0.6) for n in ("a", "b")
    ]
    for s in singletons:
        s.start()
    try:
        time.sleep(0.5)
        assert len(set(ran)) == 1  # one leader
        leader = singletons[0] if ran[0] == "a" else singletons[1]
        other = singletons[1] if leader is singletons[0] else singletons[0]
        assert leader.health()["leader"] is True
        assert other.health()["status"] == "standby"
        leader._stop.set()  # the leader's lease thread dies (as in a crash): no renewals
        leader.inner.gate = lambda: False
        deadline = time.monotonic() + 3
        while not other.lease.leading:
            assert time.monotonic() < deadline, "no takeover"
            time.sleep(0.05)
        assert other.health()["leader"] is True
    finally:
        for s in singletons:
            s.stop()


@pytest.fixture
def fresh_database(database_url: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with own_database(database_url, tmp_path, "interop_fresh") as url:
        yield url


def test_replicas_migrating_at_once_all_start(fresh_database: str) -> None:
    """Four processes' worth of `upgrade` on an empty database at the same moment: one
    migrates, the others wait and find it current (none fails creating alembic_version)."""
    engines = [create_db_engine(fresh_database, 1) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def migrate(engine) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert all(schema_is_current(e) for e in engines)
    finally:
        for e in engines:
            e.dispose()
