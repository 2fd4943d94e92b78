"""Bulk Data fixtures: apps (auth off and on) whose jobs write into a temporary folder, and
helpers that kick off a job and poll it to the end like a client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"


def _clear(app: Any, keep: frozenset[str] = frozenset()) -> None:
    clear_tables(app.state.store.engine, keep)


def _configure(app: Any, directory: Path, **changes: Any) -> None:
    jobs = app.state.bulk.jobs
    jobs.config = dataclasses.replace(jobs.config, directory=directory, **changes)


@pytest.fixture(scope="session")
def bulk_session_app(database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("bulk")
    app = create_app(
        Settings(
            database_url=database_url,
            auth="off",
            base_url=BASE,
            bulk_dir=str(folder),
            outbound_allow_import="127.0.0.1",
        )  # fmt: skip
    )
    yield app
    app.state.bulk.close()
    app.state.store.engine.dispose()


@pytest.fixture
def bulk_app(bulk_session_app, tmp_path: Path):  # type: ignore[no-untyped-def]
    _clear(bulk_session_app)
    _configure(bulk_session_app, tmp_path / "bulk", retry_after=1, max_file_bytes=256 << 20)
    return bulk_session_app


@pytest.fixture
def api(bulk_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(bulk_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def bulk_auth_session_app(database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("bulk-auth")
    settings = Settings(database_url=database_url, auth="on", base_url=BASE, bulk_dir=str(folder),
                        outbound_allow_import="127.0.0.1")  # fmt: skip
    app = create_app(settings)
    yield app
    app.state.bulk.close()
    app.state.store.engine.dispose()


@pytest.fixture
def auth_api(bulk_auth_session_app, tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    _clear(bulk_auth_session_app, frozenset({"auth_signing_keys"}))
    _configure(bulk_auth_session_app, tmp_path / "bulk", retry_after=1)
    with TestClient(bulk_auth_session_app, base_url="http://testserver") as client:
        yield client
