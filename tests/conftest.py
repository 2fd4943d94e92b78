"""Shared fixtures: every storage test runs against SQLite and PostgreSQL.

PostgreSQL is taken from INTEROP_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432, user postgres, trust auth). A throw-away database is created for the session.
Without PostgreSQL the PostgreSQL half is skipped locally, but in CI (CI=true) that is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables, own_database

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"


def _postgres_database() -> Iterator[str]:
    with own_database("postgresql") as url:
        yield url


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
