"""Emptying the database between tests, shared by every test folder.

A module of its own (not conftest.py): test modules that import "conftest" may get another
folder's. tests/ is on sys.path through the root conftest.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, text

from fhir_server.store.models import metadata


def clear_tables(engine: Engine, keep: Collection[str] = ()) -> None:
    """Delete every row of every table but those in `keep` (e.g. the signing keys an app
    loaded at start)."""
    tables = [t for t in metadata.sorted_tables if t.name not in keep]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                conn.execute(table.delete())
