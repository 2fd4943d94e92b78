"""outbox consumers: a floor and done-marks per consumer, and a lease

Revision ID: 0004_outbox_consumers
Revises: 0003_hl7_inbox
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_outbox_consumers"
down_revision = "0003_hl7_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_consumers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_outbox_consumers")),
    )
    op.create_table(
        "outbox_done",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column(
            "outbox_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "outbox_pk", name=op.f("pk_outbox_done")),
    )


def downgrade() -> None:
    op.drop_table("outbox_done")
    op.drop_table("outbox_consumers")
