"""The 0002 migration creates exactly the tables smart_auth/models.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fhir_server.store.models import metadata


def test_migrations_match_the_models(auth_app) -> None:  # type: ignore[no-untyped-def]
    engine = auth_app.state.store.engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if "auth_" in repr(d)] == []
    names = {t.name for t in metadata.sorted_tables}
    assert {
        "auth_clients",
        "auth_users",
        "auth_signing_keys",
        "auth_codes",
        "auth_launches",
        "auth_refresh_tokens",
        "auth_used_jti",
    } <= names


def test_passwords_and_secrets_are_stored_hashed(auth_app, smart) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from smart_auth.models import clients, users

    smart.user("zoe")
    client_id, secret = smart.client("system/*.rs", "confidential-secret")
    with auth_app.state.store.engine.connect() as conn:
        stored_pw = conn.execute(select(users.c.password_hash)).scalar_one()
        stored_secret = conn.execute(
            select(clients.c.secret_hash).where(clients.c.client_id == client_id)
        ).scalar_one()
    assert "correct horse" not in stored_pw and stored_pw.startswith("$argon2id$")
    assert secret not in stored_secret
