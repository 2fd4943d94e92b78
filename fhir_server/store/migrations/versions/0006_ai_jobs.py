"""ai jobs: lock, lease and progress of each AI analysis beside its FHIR Task

Revision ID: 0006_ai_jobs
Revises: 0005_imaging
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_ai_jobs"
down_revision = "0005_imaging"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ai_jobs",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("active_key", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=8), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report_id", sa.String(length=64), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_ai_jobs")),
        sa.UniqueConstraint("task_id", name=op.f("uq_ai_jobs_task_id")),
        sa.UniqueConstraint("active_key", name=op.f("uq_ai_jobs_active_key")),
    )
    op.create_index("ix_ai_jobs_status_updated", "ai_jobs", ["status", "updated"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ai_jobs_status_updated", table_name="ai_jobs")
    op.drop_table("ai_jobs")
