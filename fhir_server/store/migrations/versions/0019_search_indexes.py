"""search indexes the direct searches answer from: a candidate's token tested in the index

`Observation?subject=Patient/1&code=http://loinc.org|2339-0` is driven by the subject's
reference rows (a patient's hundred Observations) and tests each candidate's code. The
reference index now ends with resource_pk (the candidates come from the index alone), and the
token owner index continues with (param, code, system) prefixes (one seek per candidate
instead of reading every token row of it). Both replace an index, so writes maintain as many.

Revision ID: 0019_search_indexes
Revises: 0018_cds
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_search_indexes"
down_revision = "0018_cds"
branch_labels = None
depends_on = None

PREFIX = 128
REFERENCE = "ix_idx_reference_res_type_param_target_id_target_type"


def upgrade() -> None:
    op.drop_index("ix_idx_token_owner", table_name="idx_token")
    op.create_index(
        "ix_idx_token_owner",
        "idx_token",
        [
            sa.text("resource_pk"),
            sa.text("param"),
            sa.text(f"substr(code, 1, {PREFIX})"),
            sa.text(f"substr(system, 1, {PREFIX})"),
        ],
    )
    op.drop_index(REFERENCE, table_name="idx_reference")
    op.create_index(
        f"{REFERENCE}_pk",
        "idx_reference",
        ["res_type", "param", "target_id", "target_type", "resource_pk"],
    )


def downgrade() -> None:
    op.drop_index(f"{REFERENCE}_pk", table_name="idx_reference")
    op.create_index(REFERENCE, "idx_reference", ["res_type", "param", "target_id", "target_type"])
    op.drop_index("ix_idx_token_owner", table_name="idx_token")
    op.create_index("ix_idx_token_owner", "idx_token", ["resource_pk"])
