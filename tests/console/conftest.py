"""Fixtures for the operator console: an app with auth on (per database), users of each role,
and a browser-like client that signs in through /console/login."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from console_support import ConsoleUser, sign_in
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"


@pytest.fixture(scope="session")
def console_session_app(database_url: str):  # type: ignore[no-untyped-def]
    app = create_app(Settings(database_url=database_url, auth="on", base_url=BASE))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def console_app(console_session_app: Any) -> Any:
    clear_tables(console_session_app.state.store.engine, keep={"auth_signing_keys"})
    return console_session_app


@pytest.fixture
def users(console_app: Any) -> dict[str, ConsoleUser]:
    registry = console_app.state.auth.registry
    made = {}
    for name, role, fhir_user in (
        ("olga", "operator", None), ("ada", "admin", None),
        ("phil", "physician", "Practitioner/p1"), ("pat", "patient", "Patient/p1"),
    ):  # fmt: skip
        registry.add_user(name, "console-password-1", role, fhir_user)
        made[role] = ConsoleUser(name, "console-password-1", role)
    return made


@pytest.fixture
def operator(console_app: Any, users: dict[str, ConsoleUser]) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        sign_in(http, users["operator"])
        yield http


@pytest.fixture
def admin(console_app: Any, users: dict[str, ConsoleUser]) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        sign_in(http, users["admin"])
        yield http


@pytest.fixture
def anonymous(console_app: Any) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        yield http
