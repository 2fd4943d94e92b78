"""Subscription fixtures: an app (auth off) with fast retries, and a real HTTP receiver."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables, own_database
from subscription_helpers import Receiver

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"


def clear(app: Any, keep: frozenset[str] = frozenset()) -> None:
    clear_tables(app.state.store.engine, keep)
    service = app.state.subscriptions
    service._specs = None
    service.handshakes.clear()
    service.config = dataclasses.replace(
        service.config, retry_seconds=0.05, max_backoff_seconds=0.2, max_failures=3
    )


@pytest.fixture(scope="session")
def subs_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of the Subscription apps' own: delivery depends on which process holds the
    outbox consumer's lease, so no other test module's app may share it."""
    with own_database(database_url, tmp_path_factory.mktemp("subs-db"), "interop_subs") as url:
        yield url


@pytest.fixture(scope="session")
def subs_session_app(subs_database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("subs")
    settings = Settings(
        database_url=subs_database_url,
        auth="off",
        base_url=BASE,
        bulk_dir=str(folder),
        outbound_allow_subscriptions="127.0.0.1",  # the test receivers
    )
    app = create_app(settings)
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def api(subs_session_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    clear(subs_session_app)
    with TestClient(subs_session_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def subs_auth_session_app(subs_database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("subs-auth")
    settings = Settings(
        database_url=subs_database_url,
        auth="on",
        base_url=BASE,
        bulk_dir=str(folder),
        outbound_allow_subscriptions="127.0.0.1",  # the test receivers
    )
    app = create_app(settings)
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def auth_api(subs_auth_session_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    clear(subs_auth_session_app, frozenset({"auth_signing_keys"}))
    with TestClient(subs_auth_session_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.start()
    try:
        yield hook
    finally:
        hook.stop()
