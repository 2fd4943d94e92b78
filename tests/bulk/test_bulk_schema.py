"""Migrations 0005/0006 create exactly the tables the bulk and subscription modules declare."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import fhir_server.bulk.models  # noqa: F401 - registers the tables
import fhir_server.subscriptions.models  # noqa: F401
from fhir_server.store.models import metadata

OURS = ("bulk_jobs", "subscription_owners", "subscription_queue")


def test_migrations_match_the_models(bulk_app: Any) -> None:
    engine = bulk_app.state.store.engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if any(name in repr(d) for name in OURS)] == []
    assert set(OURS) <= {t.name for t in metadata.sorted_tables}
