"""`interop cds clients add|list|remove` on the server's database, and the 0014 migration
matching the CDS tables the code declares."""

# ruff: noqa: F811 - the fixtures imported from cds_support are parameters by name

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cds_support import (  # noqa: F401 - fixtures are used by name
    BASE,
    Data,
    Ehr,
    cds_app,
    cds_session_app,
    data,
    http,
)
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from fhir_server.store.models import metadata
from interop.cli import main
from interop.settings import get_settings


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, cds_app: Any):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    monkeypatch.setenv("INTEROP_BASE_URL", BASE)
    get_settings.cache_clear()
    yield main
    get_settings.cache_clear()


def test_registered_client_can_call(
    cli: Any, capsys: Any, tmp_path: Path, http: TestClient, cds_app: Any, data: Data
) -> None:
    key = ECKey.generate_key("P-384", parameters={"kid": "cli-1"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    iss = "https://cli-ehr.example"
    assert (
        cli(
            [
                "cds",
                "clients",
                "add",
                "--iss",
                iss,
                "--name",
                "Ward EHR",
                "--jwks-file",
                str(jwks),
                "--json",
            ]
        )
        == 0
    )
    added = json.loads(capsys.readouterr().out)
    assert added["iss"] == iss and added["scope"].startswith("patient/")
    ehr = Ehr(http, cds_app, key=key, iss=iss)
    data.patient("p1")
    assert ehr.call("critical-labs", "patient-view", {"patientId": "p1"}).status_code == 200
    assert cli(["cds", "clients", "list", "--json"]) == 0
    assert [c["iss"] for c in json.loads(capsys.readouterr().out)["clients"]] == [iss]
    assert cli(["cds", "clients", "remove", iss, "--json"]) == 0
    capsys.readouterr()
    assert ehr.call("critical-labs", "patient-view", {"patientId": "p1"}).status_code == 401


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--jwks-url", "ftp://x/jwks"], "http(s) URL"),
        (["--jwks-url", "https://x/jwks", "--scope", "patient/Observation.cruds"], "read-only"),
    ],
)
def test_bad_registrations_are_refused(cli: Any, capsys: Any, argv: list[str], why: str) -> None:
    assert cli(["cds", "clients", "add", "--iss", "https://e.example", *argv]) == 1
    assert why in capsys.readouterr().err


def test_private_keys_are_never_registered(cli: Any, capsys: Any, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", parameters={"kid": "k"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    assert (
        cli(["cds", "clients", "add", "--iss", "https://e.example", "--jwks-file", str(jwks)]) == 1
    )
    assert "private key" in capsys.readouterr().err


def test_migration_matches_the_cds_tables(cds_app: Any) -> None:
    with cds_app.state.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if "cds_" in repr(d)] == []
    assert {"cds_clients", "cds_used_jti", "cds_cards"} <= {t.name for t in metadata.sorted_tables}
