"""leases: named leases for singletons, and row leases on the HL7 inbox and Bulk Data jobs

`leases` elects the one process of a deployment that runs each singleton (change feeds,
schedules, sweepers, each outbox consumer). `hl7_messages` and `bulk_jobs` get the owner and
lease end that `fhir_server.store.work.WorkQueue` claims rows by, as `ai_jobs` already had.
`outbox_consumers` keeps only its floor: a consumer's lease is the named lease
`outbox:{name}`.

Revision ID: 0017_leases
Revises: 0016_console_inbox_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_leases"
down_revision = "0016_console_inbox_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.Column("acquired", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    for table in ("hl7_messages", "bulk_jobs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
            batch.add_column(sa.Column("lease_until", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("lease_until")


def downgrade() -> None:
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("lease_until", sa.BigInteger(), nullable=False, server_default="0")
        )
    for table in ("bulk_jobs", "hl7_messages"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease_until")
            batch.drop_column("lease_owner")
    op.drop_table("leases")
