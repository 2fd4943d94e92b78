"""auth hardening: sign-in and registration throttle counters, verified clients

Revision ID: 0012_auth_hardening
Revises: 0011_hl7_feeds

Clients registered before this revision cannot be told apart (operator or RFC 7591), so they
are marked unverified: the consent page warns about them until an operator registers them again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_auth_hardening"
down_revision = "0011_hl7_feeds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_throttle")),
    )
    with op.batch_alter_table("auth_clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("auth_clients", schema=None) as batch_op:
        batch_op.drop_column("verified")
    op.drop_table("auth_throttle")
