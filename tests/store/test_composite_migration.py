"""Migration 0014 indexes the resources stored before it, so composite searches find them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from alembic import command
from sqlalchemy import text
from store_support import own_database

from fhir_server.search.query import Compiler, execute
from fhir_server.store.db import alembic_config, create_db_engine, unbounded, upgrade
from fhir_server.store.repository import Store

BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "component": [
        {"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": 80}},
    ],
}


ADMIN_URL = os.environ.get(
    "INTEROP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, to migrate step by step."""
    with own_database(request.param, tmp_path, "interop_mig") as url:
        yield url


def test_upgrade_indexes_stored_observations(fresh_url: str) -> None:
    engine = create_db_engine(fresh_url)
    try:
        config = alembic_config(fresh_url)
        with engine.begin() as conn:  # a database as the previous release left it
            unbounded(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "0013_text_index")
            conn.execute(
                text(
                    "INSERT INTO resources (res_type, res_id, version_id, last_updated, "
                    "deleted, body) VALUES ('Observation', 'bp', 1, 0, false, :body)"
                ),
                {"body": orjson.dumps(BLOOD_PRESSURE)},
            )
        upgrade(engine)
        store = Store(engine, "http://testserver/fhir")

        def ids(value: str) -> set[str]:
            plan = Compiler(store.base_url).compile(
                "Observation", [("component-code-value-quantity", value)]
            )
            with store.connection() as conn:
                return {row.res_id for row in execute(conn, plan).rows}

        assert ids("8480-6$120") == {"bp"}
        assert ids("8480-6$80") == set()  # the pair of another component
    finally:
        engine.dispose()
