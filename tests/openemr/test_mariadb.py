# ruff: noqa: E501 - fixture loading SQL reads best on one line
"""MariaDB source mode against the real MariaDB on 127.0.0.1:3306 (root, no password).

A throw-away database is built from OpenEMR's own schema (schema_subset.sql) and its test
fixture rows (fixture_db_rows.json) from ../shared/reference/openemr; in CI (CI=true) a missing
MariaDB fails the run instead of skipping.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_support import IN_CI
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from mappers.openemr import Systems
from openemr_bridge.database import DbSource
from openemr_bridge.sync import Syncer

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openemr"
ADMIN_URL = os.environ.get("INTEROP_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
SYSTEMS = Systems.for_site("default")


def _load(url: str) -> dict[str, Any]:
    """Schema verbatim; fixture rows with their foreign-key placeholders resolved."""
    engine = create_engine(url)
    schema = (REFERENCE / "schema_subset.sql").read_text()
    fixtures = json.loads((REFERENCE / "fixture_db_rows.json").read_text())
    uuids: dict[str, bytes | None] = {}
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")  # as OpenEMR runs: not strict
        for statement in schema.split(";\n"):
            body = "\n".join(x for x in statement.splitlines() if not x.startswith("--")).strip()
            if body:
                conn.exec_driver_sql(body)
        for pid, row in enumerate(fixtures["patient_data_rows"], start=1):
            # the last fixture patient was written outside OpenEMR: no uuid yet
            raw = None if pid == len(fixtures["patient_data_rows"]) else uuid.uuid4().bytes
            uuids[row["pubpid"]] = raw
            cols = {**row, "pid": pid, "uuid": raw}
            conn.execute(
                text(f"INSERT INTO patient_data ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                cols,
            )  # fmt: skip
        pid_of = {r["pubpid"]: i for i, r in enumerate(fixtures["patient_data_rows"], start=1)}
        for n, row in enumerate(fixtures["form_encounter_rows"], start=1):
            cols = {k: v for k, v in row.items() if not isinstance(v, dict)}
            cols |= {"pid": pid_of[row["pid"]["columnSearchValue"]], "facility_id": 0, "pc_catid": 5,
                     "uuid": uuid.uuid4().bytes, "encounter": 900 + n, "date": "2026-01-02 09:30:00"}  # fmt: skip
            conn.execute(
                text(f"INSERT INTO form_encounter ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                cols,
            )  # fmt: skip
        for row in fixtures["lists_allergy_rows"]:
            cols = {**row, "pid": pid_of[row["pid"]], "uuid": uuid.uuid4().bytes}
            conn.execute(
                text(f"INSERT INTO lists ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                cols,
            )  # fmt: skip
        first = pid_of["test-fixture-789456"]
        conn.execute(
            text("INSERT INTO lists (uuid, type, title, diagnosis, begdate, pid) "
                 "VALUES (:u, 'medical_problem', 'Hypertension', 'ICD10:I10', '2010-10-13', :p)"),
            {"u": uuid.uuid4().bytes, "p": first},
        )  # fmt: skip
        conn.execute(
            text("INSERT INTO form_vitals (uuid, date, pid, bps, bpd, weight, height, temperature) "
                 "VALUES (:u, '2026-01-02 10:00:00', :p, '120', '80', 180, 70, 98.6)"),
            {"u": uuid.uuid4().bytes, "p": first},
        )  # fmt: skip
        conn.execute(
            text("INSERT INTO prescriptions (uuid, patient_id, drug, rxnorm_drugcode, active, txDate, "
                 "usage_category_title, request_intent_title, date_added) VALUES (:u, :p, 'Lisinopril', "
                 "'314076', 1, '2026-01-02', '', '', '2026-01-02 10:00:00')"),
            {"u": uuid.uuid4().bytes, "p": first},
        )  # fmt: skip
    engine.dispose()
    return {"uuids": uuids, "pid_of": pid_of, "count": len(fixtures["patient_data_rows"])}


@pytest.fixture(scope="module")
def mariadb() -> Iterator[tuple[str, dict[str, Any]]]:
    if not REFERENCE.exists():
        pytest.skip(f"OpenEMR reference schema not found at {REFERENCE}")
    name = f"openemr_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no MariaDB here"
        if IN_CI:
            pytest.fail(f"MariaDB is required in CI but unreachable at {ADMIN_URL}: {exc}")
        pytest.skip(f"MariaDB not reachable ({exc}); set CI=true to make this a failure")
    url = f"{ADMIN_URL.rstrip('/')}/{name}"
    try:
        yield url, _load(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def test_rows_are_normalised_like_the_api(mariadb: tuple[str, dict[str, Any]]) -> None:
    url, loaded = mariadb
    source = DbSource(url)
    page = source.patients(5, 0)
    assert [r["pid"] for r in page] == [1, 2, 3, 4, 5]
    first = page[0]
    assert first["uuid"] == str(uuid.UUID(bytes=loaded["uuids"]["test-fixture-789456"]))
    assert first["DOB"] == "1957-01-09"
    assert source.patient(first["uuid"])["lname"] == "Perez"  # type: ignore[index]
    assert source.patient("pid:2")["fname"] == "Nora"  # type: ignore[index]
    assert source.patient("not-a-uuid") is None
    last = source.patients(100, 0)[-1]
    assert last["uuid"] is None  # written outside OpenEMR
    record = source.record(first)
    assert [a["title"] for a in record.allergies] == ["Ampicillin"]
    assert [p["diagnosis"] for p in record.problems] == ["ICD10:I10"]
    assert record.vitals[0]["weight"] == "180.000000"
    assert record.encounters[0]["uuid"] and record.prescriptions[0]["rxnorm_drugcode"] == "314076"


def test_source_is_read_only(mariadb: tuple[str, dict[str, Any]]) -> None:
    source = DbSource(mariadb[0])
    with pytest.raises(Exception, match="READ ONLY"), source.engine.begin() as conn:
        conn.execute(text("UPDATE patient_data SET fname = 'x'"))


def test_initial_load_from_the_database(
    client: TestClient, mariadb: tuple[str, dict[str, Any]]
) -> None:
    url, loaded = mariadb
    ctx = client.app.state.context  # type: ignore[attr-defined]
    summary = Syncer(ctx, DbSource(url), SYSTEMS, page_size=5).run()
    assert (summary.created, summary.failed) == (loaded["count"], 0), summary.reasons
    assert summary.expected == loaded["count"]  # the database can tell: a real progress bar
    total = client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    assert total == loaded["count"]
    perez = client.get(
        "/fhir/Patient", params={"identifier": "urn:openemr:default:mrn|test-fixture-789456"}
    )
    patient = perez.json()["entry"][0]["resource"]
    assert patient["name"][0]["given"] == ["Eduardo", "Kathy"]
    ref = f"Patient/{patient['id']}"
    for res_type, expected in (
        ("AllergyIntolerance", 1),
        ("Condition", 1),
        ("Encounter", 1),
        ("MedicationRequest", 1),
        ("Observation", 4),
    ):
        found = client.get(f"/fhir/{res_type}", params={"patient": ref, "_summary": "count"})
        assert found.json()["total"] == expected, res_type  # fmt: skip
    no_uuid = client.get(
        "/fhir/Patient", params={"identifier": f"urn:openemr:default:pid|{loaded['count']}"}
    )
    idents = {i["system"] for i in no_uuid.json()["entry"][0]["resource"]["identifier"]}
    assert "urn:openemr:default:uuid" not in idents
    again = Syncer(ctx, DbSource(url), SYSTEMS, page_size=5).run(full=True)
    assert again.unchanged == loaded["count"]
