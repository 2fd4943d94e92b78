"""Fixtures: the OpenEMR simulator on a loopback port, a registered client and service user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from oe_accounts import CLIENT_ID, CLIENT_SECRET, SERVICE_PASSWORD, SERVICE_USER, bridge_settings
from simulator import OpenEmrSimulator, ServedSimulator
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.config import OpenEmrConfig


@pytest.fixture(scope="session")
def client_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture
def sim(client_key: RSAKey) -> Iterator[OpenEmrSimulator]:
    simulator = OpenEmrSimulator()
    simulator.add_client(
        CLIENT_ID,
        secret=CLIENT_SECRET,
        public_jwk=client_key.as_dict(private=False) | {"kid": client_key.thumbprint()},
    )
    simulator.add_user(SERVICE_USER, SERVICE_PASSWORD)
    with ServedSimulator(simulator):
        yield simulator


@pytest.fixture
def key_file(tmp_path: Path, client_key: RSAKey) -> str:
    path = tmp_path / "openemr-client.pem"
    path.write_bytes(client_key.as_pem(private=True))
    return str(path)


@pytest.fixture
def oe_config(sim: OpenEmrSimulator, key_file: str) -> OpenEmrConfig:
    return OpenEmrConfig(
        base_url=sim.base,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        username=SERVICE_USER,
        password=SERVICE_PASSWORD,
        private_key=key_file,
        backoff=0.0,
        timeout=5,
    )


@pytest.fixture
def oe(oe_config: OpenEmrConfig) -> Iterator[OpenEmrClient]:
    with OpenEmrClient(oe_config) as client:
        yield client


@pytest.fixture
def bridge_http(database_url: str, sim: OpenEmrSimulator) -> Iterator[Any]:
    """Factory: our app (auth off) wired to the simulator, tables emptied, in a TestClient."""
    made: list[Any] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(
            database_url=database_url,
            auth="off",
            base_url="http://testserver/fhir",
            **bridge_settings(sim.base),
            **overrides,
        )
        app = create_app(settings)
        clear_tables(app.state.store.engine, keep={"auth_signing_keys"})
        client = TestClient(app, base_url="http://testserver")
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)
        client.app.state.store.engine.dispose()  # type: ignore[attr-defined]
