"""audit_pending: read events of the audit trail as compact rows until AuditEvents are read

Writing a full AuditEvent (resource, version, outbox and ~15 index rows) for every read cost
reads a fifth to a third of their throughput. Reads now leave one row here, and the rows
become AuditEvent resources before any request that can read AuditEvents
(fhir_server/store/audit.py), so searches find the same events as before.

Revision ID: 0015_audit_pending
Revises: 0014_composite_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_audit_pending"
down_revision = "0014_composite_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_pending")),
    )


def downgrade() -> None:
    op.drop_table("audit_pending")
