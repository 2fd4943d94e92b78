"""index tables hold FHIR strings of any length: Text columns, B-tree indexes on a prefix

PostgreSQL refused strings longer than the VARCHAR limits (512 characters) and would refuse
an index row over ~2.7 kB; SQLite never enforced either. The columns become TEXT and their
indexes cover the first 128 characters (`models.prefix_of`); queries test that prefix and
then the whole value.

Revision ID: 0013_text_index
Revises: 0012_auth_hardening
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_text_index"
down_revision = "0012_auth_hardening"
branch_labels = None
depends_on = None

PREFIX = 128
# (table, index name, columns; a column with `True` is indexed by its prefix)
INDEXES = [
    (
        "idx_string",
        "ix_idx_string_res_type_param_value",
        [("res_type", False), ("param", False), ("value", True)],
    ),
    (
        "idx_token",
        "ix_idx_token_res_type_param_code_system",
        [("res_type", False), ("param", False), ("code", True), ("system", True)],
    ),
    (
        "idx_uri",
        "ix_idx_uri_res_type_param_uri",
        [("res_type", False), ("param", False), ("uri", True)],
    ),
]
# (table, column, old length) widened to TEXT on PostgreSQL (SQLite ignores lengths)
COLUMNS = [
    ("idx_string", "value", 512, False),
    ("idx_string", "exact", 512, False),
    ("idx_token", "system", 512, True),
    ("idx_token", "code", 512, True),
    ("idx_token", "text", 512, True),
    ("idx_quantity", "system", 512, True),
    ("idx_quantity", "code", 128, True),
    ("idx_quantity", "unit", 128, True),
    ("idx_uri", "uri", 1024, False),
]


def upgrade() -> None:
    for table, name, _ in INDEXES:
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        for table, column, length, nullable in COLUMNS:
            op.alter_column(
                table,
                column,
                type_=sa.Text(),
                existing_type=sa.String(length),
                existing_nullable=nullable,
            )
    for table, name, columns in INDEXES:
        parts = [f"substr({c}, 1, {PREFIX})" if prefixed else c for c, prefixed in columns]
        op.create_index(name, table, [sa.text(p) for p in parts])


def downgrade() -> None:
    for table, name, _ in INDEXES:
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        for table, column, length, nullable in COLUMNS:
            op.alter_column(
                table,
                column,
                type_=sa.String(length),
                existing_type=sa.Text(),
                existing_nullable=nullable,
                postgresql_using=f"left({column}, {length})",
            )
    for table, name, columns in INDEXES:
        op.create_index(name, table, [c for c, _ in columns])
