"""hl7 feeds: content hash (duplicate = same sender, control id and content), flags, warning

Revision ID: 0011_hl7_feeds
Revises: 0010_sec_side
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_hl7_feeds"
down_revision = "0010_sec_side"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_messages") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("flags", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("warning", sa.Text(), nullable=True))
    op.create_index("ix_hl7_messages_content_hash", "hl7_messages", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_hl7_messages_content_hash", table_name="hl7_messages")
    with op.batch_alter_table("hl7_messages") as batch:
        batch.drop_column("warning")
        batch.drop_column("flags")
        batch.drop_column("content_hash")
