"""Alembic environment: runs on the connection handed over by `fhir_server.store.db.upgrade`."""

from alembic import context
from sqlalchemy import create_engine

import cds_hooks.models  # noqa: F401 - its tables share the store metadata
import openemr_bridge.models  # noqa: F401 - its tables share the store metadata
import smart_auth.models  # noqa: F401 - its tables share the store metadata
from fhir_server.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
