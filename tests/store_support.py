"""Databases for tests: an empty one of a test's own, and emptying one between tests; shared by
every test folder.

A module of its own (not conftest.py): test modules that import "conftest" may get another
folder's. tests/ is on sys.path through the root conftest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from ci_support import unavailable
from sqlalchemy import Engine, create_engine, text

from fhir_server.store.models import metadata

POSTGRES_ADMIN_URL = os.environ.get(
    "INTEROP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def own_database(
    kind: str, folder: Path | None = None, prefix: str = "interop_test"
) -> Iterator[str]:
    """An empty database of the caller's own: for `kind` "sqlite" (or a SQLite URL) a file in
    `folder`; otherwise a new PostgreSQL database on INTEROP_TEST_POSTGRES_URL's server, dropped
    afterwards. Without PostgreSQL the test is skipped locally and fails in CI (CI=true)."""
    if kind.startswith("sqlite"):
        assert folder is not None, "a SQLite database needs a folder"
        yield f"sqlite:///{folder / f'{prefix}.db'}"
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        unavailable(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
