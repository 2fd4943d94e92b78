"""Fixtures: a real Orthanc per session (see imaging_support), an app bridged to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from imaging_support import Orthanc, clear_database, imaging_settings, running_orthanc
from starlette.testclient import TestClient

from interop.app import create_app


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[Orthanc]:
    with running_orthanc() as server:
        yield server


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    orthanc_server.clear()
    return orthanc_server


@pytest.fixture(scope="session")
def imaging_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="off",
                                      orthanc_callback_token="callback-token"))  # fmt: skip
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_app(imaging_session_app, orthanc: Orthanc):  # type: ignore[no-untyped-def]
    clear_database(imaging_session_app)
    bridge = imaging_session_app.state.imaging
    bridge.state.set_cursor("orthanc-changes", str(orthanc.last_change()))
    return imaging_session_app


@pytest.fixture
def imaging_client(imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(imaging_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def imaging_auth_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="on", auth_audit=False))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_auth_client(imaging_auth_session_app, imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """Auth on, same database and Orthanc as `imaging_app` (which cleared both)."""
    with TestClient(imaging_auth_session_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def imaging_audited_session_app(database_url: str, orthanc_server: Orthanc):  # type: ignore[no-untyped-def]
    app = create_app(imaging_settings(database_url, orthanc_server, auth="on", auth_audit=True))
    yield app
    app.state.audit.close()
    app.state.store.engine.dispose()


@pytest.fixture
def imaging_audited_client(imaging_audited_session_app, imaging_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(imaging_audited_session_app, base_url="http://testserver") as client:
        yield client
