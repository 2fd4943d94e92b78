"""imaging: change-feed cursors and the studies the DICOMweb bridge has synced

Revision ID: 0005_imaging
Revises: 0004_outbox_consumers
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_imaging"
down_revision = "0004_outbox_consumers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imaging_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_imaging_cursors")),
    )
    op.create_table(
        "imaging_studies",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("orthanc_id", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("synced_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("study_uid", name=op.f("pk_imaging_studies")),
    )
    op.create_index("ix_imaging_studies_orthanc_id", "imaging_studies", ["orthanc_id"])


def downgrade() -> None:
    op.drop_index("ix_imaging_studies_orthanc_id", table_name="imaging_studies")
    op.drop_table("imaging_studies")
    op.drop_table("imaging_cursors")
