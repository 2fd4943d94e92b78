"""OpenEMR bridge tables (openemr_bridge/models.py) and SSO sessions (smart_auth/models.py)

Revision ID: 0007_openemr
Revises: 0006_ai_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_openemr"
down_revision = "0006_ai_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "openemr_records",
        sa.Column("source_key", sa.String(128), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("versions", sa.Text(), nullable=False),
        sa.Column("synced", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source_key", name=op.f("pk_openemr_records")),
    )
    op.create_table(
        "openemr_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_openemr_state")),
    )
    op.create_table(
        "openemr_launches",
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("browser", sa.String(64), nullable=False),
        sa.Column("iss", sa.Text(), nullable=False),
        sa.Column("verifier", sa.String(128), nullable=False),
        sa.Column("token_endpoint", sa.Text(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("state", name=op.f("pk_openemr_launches")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_auth_sessions")),
    )


def downgrade() -> None:
    op.drop_table("auth_sessions")
    op.drop_table("openemr_launches")
    op.drop_table("openemr_state")
    op.drop_table("openemr_records")
