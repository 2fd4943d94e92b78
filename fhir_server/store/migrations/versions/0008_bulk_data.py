"""bulk data: the $export / $import job table

Revision ID: 0008_bulk_data
Revises: 0007_openemr
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_bulk_data"
down_revision = "0007_openemr"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_jobs",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("transaction_time", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.String(length=255), nullable=False),
        sa.Column("heartbeat", sa.BigInteger(), nullable=False),
        sa.Column("cancel", sa.Boolean(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("expires", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_bulk_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_bulk_jobs_job_id")),
    )
    op.create_index("ix_bulk_jobs_expires", "bulk_jobs", ["expires"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bulk_jobs_expires", table_name="bulk_jobs")
    op.drop_table("bulk_jobs")
