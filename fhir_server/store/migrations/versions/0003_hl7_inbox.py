"""hl7 inbox: raw HL7 v2 messages kept before they are acknowledged

Revision ID: 0003_hl7_inbox
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_hl7_inbox"
down_revision = "0002_smart_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("control_id", sa.String(length=199), nullable=False),
        sa.Column("message_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("resources", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_hl7_messages")),
    )
    op.create_index(
        "ix_hl7_messages_sender_control", "hl7_messages", ["sender", "control_id"], unique=False
    )
    op.create_index(
        "ix_hl7_messages_status_received",
        "hl7_messages",
        ["status", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_hl7_messages_status_received", table_name="hl7_messages")
    op.drop_index("ix_hl7_messages_sender_control", table_name="hl7_messages")
    op.drop_table("hl7_messages")
