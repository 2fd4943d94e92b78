"""Shared fixtures: every storage test runs against SQLite and PostgreSQL.

PostgreSQL is taken from INTEROP_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432, user postgres, trust auth). A throw-away database is created for the session.
Without PostgreSQL the PostgreSQL half is skipped locally, but in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "INTEROP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BASE = "http://testserver/fhir"


def _postgres_database() -> Iterator[str]:
    name = f"interop_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        if IN_CI:
            pytest.fail(
                f"PostgreSQL is required in CI but unreachable at {POSTGRES_ADMIN_URL}: {exc}"
            )
        pytest.skip(f"PostgreSQL not reachable ({exc}); set CI=true to make this a failure")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "interop.db"
        yield f"sqlite:///{path}"
    else:
        yield from _postgres_database()


@pytest.fixture(scope="session")
def session_app(database_url: str):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database_url, auth="off", base_url=BASE)
    app = create_app(settings)
    yield app
    app.state.store.engine.dispose()


def _clear(app) -> None:  # type: ignore[no-untyped-def]
    clear_tables(app.state.store.engine)


@pytest.fixture
def app(session_app):  # type: ignore[no-untyped-def]
    _clear(session_app)
    return session_app


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client
