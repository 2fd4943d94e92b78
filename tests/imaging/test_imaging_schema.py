"""Migration 0005 creates exactly the tables dicomweb_bridge/state.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fhir_server.store.models import metadata


def test_migration_matches_the_bridge_tables(app) -> None:
    with app.state.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if "imaging_" in repr(d)] == []
    assert {"imaging_cursors", "imaging_studies"} <= {t.name for t in metadata.sorted_tables}
