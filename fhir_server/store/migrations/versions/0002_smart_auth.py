"""SMART authorization server tables (smart_auth/models.py)

Revision ID: 0002_smart_auth
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_smart_auth"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_clients",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("client_type", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(256), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("launch_url", sa.Text(), nullable=True),
        sa.Column("pkce_exempt", sa.Boolean(), nullable=False),
        sa.Column("can_launch", sa.Boolean(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_auth_clients")),
    )
    op.create_table(
        "auth_users",
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("fhir_user", sa.String(200), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_auth_users")),
    )
    op.create_table(
        "auth_signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("retired", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_auth_signing_keys")),
    )
    op.create_table(
        "auth_requests",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("encounter", sa.String(64), nullable=True),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_auth_requests")),
    )
    op.create_table(
        "auth_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=True),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_auth_codes")),
    )
    op.create_table(
        "auth_launches",
        sa.Column("launch_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("encounter", sa.String(64), nullable=True),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("intent", sa.String(64), nullable=True),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("launch_id", name=op.f("pk_auth_launches")),
    )
    op.create_table(
        "auth_refresh_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_auth_refresh_tokens")),
    )
    with op.batch_alter_table("auth_refresh_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_auth_refresh_tokens_family", ["family"], unique=False)
    op.create_table(
        "auth_used_jti",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_auth_used_jti")),
    )
    op.create_table(
        "auth_revoked_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_auth_revoked_tokens")),
    )


def downgrade() -> None:
    for name in (
        "auth_revoked_tokens",
        "auth_used_jti",
        "auth_refresh_tokens",
        "auth_launches",
        "auth_codes",
        "auth_requests",
        "auth_signing_keys",
        "auth_users",
        "auth_clients",
    ):
        op.drop_table(name)
