"""CDS Hooks: registered CDS clients, used JWT ids, issued cards

Revision ID: 0018_cds
Revises: 0017_leases
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_cds"
down_revision = "0017_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_clients",
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("iss", name=op.f("pk_cds_clients")),
    )
    op.create_table(
        "cds_used_jti",
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name=op.f("pk_cds_used_jti")),
    )
    op.create_index("ix_cds_used_jti_expires", "cds_used_jti", ["expires"])
    op.create_table(
        "cds_cards",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("focus", sa.Text(), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_cds_cards")),
    )
    op.create_index("ix_cds_cards_issued", "cds_cards", ["issued"])


def downgrade() -> None:
    op.drop_index("ix_cds_cards_issued", table_name="cds_cards")
    op.drop_table("cds_cards")
    op.drop_index("ix_cds_used_jti_expires", table_name="cds_used_jti")
    op.drop_table("cds_used_jti")
    op.drop_table("cds_clients")
