"""search index tables: no foreign key to resources on PostgreSQL

Each index row inserted ran PostgreSQL's referential-integrity check (a locking SELECT on
resources): ~13 per Patient write, ~20 % of the backend's CPU in a write. The key guarded
nothing the write path does not already guarantee: resources rows are never deleted (a
DELETE keeps the row, marked deleted, and clears its index rows in the same transaction), and
index rows are only inserted for the row just written. SQLite keeps its constraint: its check
is a rowid lookup, and dropping it would mean rebuilding every index table.

Revision ID: 0020_index_owner_checks
Revises: 0019_search_indexes
"""

from alembic import op

revision = "0020_index_owner_checks"
down_revision = "0019_search_indexes"
branch_labels = None
depends_on = None

TABLES = (
    "idx_string",
    "idx_token",
    "idx_date",
    "idx_reference",
    "idx_quantity",
    "idx_number",
    "idx_uri",
    "idx_composite",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.drop_constraint(f"fk_{table}_resource_pk", table, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.create_foreign_key(
            f"fk_{table}_resource_pk",
            table,
            "resources",
            ["resource_pk"],
            ["pk"],
            ondelete="CASCADE",
        )
