"""`interop openemr sync|pending|push` end to end: settings from the environment, JSON out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oe_accounts import CLIENT_ID, CLIENT_SECRET, SERVICE_PASSWORD, SERVICE_USER
from simulator import OpenEmrSimulator

from interop.cli import main
from interop.settings import get_settings


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, sim: OpenEmrSimulator, app: Any, database_url: str
) -> Iterator[None]:
    values = {
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_BASE_URL": "http://testserver/fhir",
        "INTEROP_OPENEMR_URL": sim.base,
        "INTEROP_OPENEMR_CLIENT_ID": CLIENT_ID,
        "INTEROP_OPENEMR_CLIENT_SECRET": CLIENT_SECRET,
        "INTEROP_OPENEMR_USERNAME": SERVICE_USER,
        "INTEROP_OPENEMR_PASSWORD": SERVICE_PASSWORD,
        "INTEROP_OPENEMR_PAGE_SIZE": "2",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


def test_sync_pending_push(
    env: None, sim: OpenEmrSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        sim.add_patient(fname=f"A{i}", lname="Lee", DOB="1980-01-02", sex="Male") for i in range(3)
    ]
    code, summary = run(capsys, "openemr", "sync", "--json")
    assert code == 0
    assert summary == {"created": 3, "updated": 0, "unchanged": 0, "failed": 0, "reasons": {}}
    code, summary = run(capsys, "openemr", "sync", "--full", "--json")
    assert summary["unchanged"] == 3
    sim.patients[rows[0]["uuid"]]["fname"] = "Changed"
    code, summary = run(capsys, "openemr", "sync", "--patient", rows[0]["uuid"], "--json")
    assert (code, summary["updated"]) == (0, 1)
    code, summary = run(
        capsys, "openemr", "sync", "--patient", "00000000-0000-4000-8000-000000000000", "--json"
    )
    assert code == 1 and summary["failed"] == 1
    code, listed = run(capsys, "openemr", "pending", "--json")
    assert listed == {"pending": []}


def test_sync_without_configuration_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("INTEROP_DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("INTEROP_OPENEMR_URL", "")
    get_settings.cache_clear()
    try:
        assert main(["openemr", "sync"]) == 1
    finally:
        get_settings.cache_clear()
    assert "INTEROP_OPENEMR_URL" in capsys.readouterr().err
    assert not (tmp_path / "unused.db").exists()


def test_failure_summary_names_the_patient_never_the_password(
    env: None, sim: OpenEmrSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.add_patient(fname="A", lname="Lee", DOB="1980-01-02", sex="Male")
    sim.password_grant = False
    code = main(["openemr", "sync"])
    captured = capsys.readouterr()
    assert code == 1
    assert "unsupported_grant_type" in captured.err
    assert SERVICE_PASSWORD not in captured.err + captured.out


def test_push_command(
    env: None, sim: OpenEmrSimulator, app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as http:
        body = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:9", "value": "Q1"}],
            "name": [{"family": "Okafor", "given": ["Ada"]}],
            "birthDate": "1990-05-06",
        }
        patient_id = http.post("/fhir/Patient", json=body).json()["id"]
    code, result = run(capsys, "openemr", "push", patient_id, "--json")
    assert (code, result["status"]) == (0, "created")
    assert sim.patients[result["uuid"]]["pubpid"] == "Q1"
    code, result = run(capsys, "openemr", "push", patient_id, "--json")
    assert (code, result["status"]) == (0, "known")


def test_scheduled_sync(env: None, sim: OpenEmrSimulator, app: Any) -> None:
    """`interop serve` runs the OpenEMR sync as a service of the one runtime."""
    import time

    from interop.runtime import Runtime

    sim.add_patient(fname="A", lname="Lee", DOB="1980-01-02", sex="Male")
    settings = get_settings().model_copy(update={"openemr_sync_interval": 1, "mllp_port": 0})
    runtime = Runtime(settings, migrate=False, pool_size=2)
    runtime.add_channel_services()
    assert [s.name for s in runtime.services.all] == ["openemr-sync"]
    runtime.services.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with app.state.store.engine.connect() as conn:
                from sqlalchemy import text

                if conn.execute(text("SELECT COUNT(*) FROM openemr_records")).scalar():
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the scheduled sync never ran")
        assert wait_until(lambda: runtime.services.health()["openemr-sync"]["status"] == "ok")
    finally:
        runtime.close()
    assert runtime.services.health()["openemr-sync"]["status"] == "stopped"
    off = Runtime(settings.model_copy(update={"openemr_sync_interval": 0}), migrate=False)
    off.add_channel_services()
    assert off.services.all == []
    off.close()


def wait_until(check: Any, seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_progress_line() -> None:
    from interop.openemr_cli import progress_line
    from openemr_bridge.sync import Summary

    summary = Summary(created=2, unchanged=3, expected=10)
    assert progress_line(summary) == "2 created, 0 updated, 3 unchanged, 0 failed"
