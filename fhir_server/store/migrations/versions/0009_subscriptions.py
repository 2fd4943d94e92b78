"""subscriptions: owners and the durable notification queue

Revision ID: 0009_subscriptions
Revises: 0008_bulk_data
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_subscriptions"
down_revision = "0008_bulk_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_owners",
        sa.Column("sub_id", sa.String(length=64), nullable=False),
        sa.Column("requester", sa.String(length=255), nullable=False),
        sa.Column("grant", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sub_id", name=op.f("pk_subscription_owners")),
    )
    op.create_table(
        "subscription_queue",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sub_id", sa.String(length=64), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subscription_queue")),
    )
    op.create_index(
        "ix_subscription_queue_due", "subscription_queue", ["next_attempt", "pk"], unique=False
    )
    op.create_index(
        "ix_subscription_queue_sub", "subscription_queue", ["sub_id", "pk"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_queue_sub", table_name="subscription_queue")
    op.drop_index("ix_subscription_queue_due", table_name="subscription_queue")
    op.drop_table("subscription_queue")
    op.drop_table("subscription_owners")
