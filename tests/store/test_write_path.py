"""The store under concurrent writers, and the planner statistics it keeps up to date."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text
from starlette.testclient import TestClient

from fhir_server.store.statistics import PlannerStatistics


def test_concurrent_writers_all_succeed(client: TestClient) -> None:
    """Eight threads writing at once: no 'database is locked', no lost or duplicated write."""

    def write(i: int) -> tuple[int, str]:
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:w", "value": str(i)}]}
        created = client.post("/fhir/Patient", json=body)
        pid = created.json()["id"]
        body["id"] = pid
        body["gender"] = "female"
        updated = client.put(f"/fhir/Patient/{pid}", json=body)
        return updated.status_code, pid

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(80)))
    assert {status for status, _ in results} == {200}
    found = client.get("/fhir/Patient", params={"gender": "female", "_count": 1000}).json()
    assert found["total"] == 80
    assert {e["resource"]["id"] for e in found["entry"]} == {pid for _, pid in results}
    assert all(e["resource"]["meta"]["versionId"] == "2" for e in found["entry"])


def test_concurrent_conditional_updates_create_one_resource(app: Any) -> None:
    """Eight feeds upserting the same patient at once (`PUT Patient?identifier=...` in a
    transaction, as every mapper writes) end with one Patient, every write applied."""

    def upsert(i: int) -> str:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:5e1a3c9e-0000-4000-8000-00000000000" + str(i % 10),
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": "urn:mrn", "value": str(i // 8)}],
                        "birthDate": f"19{50 + i % 8}-01-01",
                    },
                    "request": {"method": "PUT", "url": f"Patient?identifier=urn:mrn|{i // 8}"},
                }
            ],
        }
        (result,) = app.state.store.apply(bundle)
        return str(result.status)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(upsert, range(32)))  # 4 identities, 8 writers each
    assert all(s in ("200", "201") for s in statuses)
    assert statuses.count("201") == 4
    with TestClient(app) as client:
        found = client.get("/fhir/Patient", params={"_count": 100}).json()
    assert found["total"] == 4
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in found["entry"])
    assert versions == [8, 8, 8, 8]


def test_statistics_are_refreshed_once_the_data_has_grown(app: Any, client: TestClient) -> None:
    store = app.state.store
    stats = PlannerStatistics(store.engine, store.write_connection, first_run_after=5)
    for i in range(5):
        client.post("/fhir/Observation", json=_observation(i))
    stats.record_writes(4)
    assert stats.runs == 0  # below the threshold: nothing runs
    stats.record_writes(1)
    deadline = time.monotonic() + 10
    while stats.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats.runs == 1
    assert _analyzed(store.engine, "idx_token")


def _analyzed(engine: Any, table: str) -> bool:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}
            )
        else:
            rows = conn.execute(
                text("SELECT count(*) FROM pg_stats WHERE tablename = :t"), {"t": table}
            )
        return bool(rows.scalar())


def _observation(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": f"{i}-0"}]},
    }


def test_sqlite_checkpoints_run_beside_the_writers(tmp_path: Any) -> None:
    """The write-ahead log reaches the database file without any commit checkpointing it
    (a checkpoint inside COMMIT holds the write lock through two fsyncs), and the
    checkpoint thread ends with the engine."""
    import sqlite3

    from fhir_server.store.db import Checkpointer, create_db_engine

    path = tmp_path / "wal.db"
    before = set(threading.enumerate())
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (42)")

    def in_file() -> list[Any]:  # the database file alone, the log ignored
        file = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return file.execute("SELECT v FROM t").fetchall()
        except sqlite3.OperationalError:  # the table is still only in the log
            return []
        finally:
            file.close()

    deadline = time.monotonic() + 10 * Checkpointer.INTERVAL + 5
    while not in_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_file() == [(42,)]
    threads = [t for t in set(threading.enumerate()) - before if t.name == "sqlite-checkpoint"]
    assert len(threads) == 1
    engine.dispose()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in threads)
