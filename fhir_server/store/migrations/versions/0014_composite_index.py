"""composite search parameters: the idx_composite table, filled for the resources stored so far

Composite parameters (`code-value-quantity`, `component-code-value-quantity`, ...) need the
components of one element indexed together (fhir_server/search/kinds/composite.py). New writes
index them; this revision also indexes what is already stored, so a search never misses an
old resource. Only types that have composite parameters are read, in pages of 500 bodies.

Revision ID: 0014_composite_index
Revises: 0013_text_index
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0014_composite_index"
down_revision = "0013_text_index"
branch_labels = None
depends_on = None

PREFIX = 128
PAGE = 500


def upgrade() -> None:
    op.create_table(
        "idx_composite",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("element", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        *(sa.Column(c, sa.Text(), nullable=True) for c in ("system", "code", "text")),
        *(sa.Column(c, sa.Text(), nullable=True) for c in ("value", "exact")),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("dlow", sa.BigInteger(), nullable=True),
        sa.Column("dhigh", sa.BigInteger(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=True),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["resources.pk"],
            name=op.f("fk_idx_composite_resource_pk"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_idx_composite_owner", "idx_composite", ["resource_pk"])
    op.create_index(
        "ix_idx_composite_res_type_param_part_code_system",
        "idx_composite",
        [
            sa.text("res_type"),
            sa.text("param"),
            sa.text("part"),
            sa.text(f"substr(code, 1, {PREFIX})"),
            sa.text(f"substr(system, 1, {PREFIX})"),
        ],
    )
    op.create_index(
        "ix_idx_composite_res_type_param_part_target_id",
        "idx_composite",
        ["res_type", "param", "part", "target_id"],
    )
    op.create_index(
        "ix_idx_composite_resource_pk_param_element_part",
        "idx_composite",
        ["resource_pk", "param", "element", "part"],
    )
    _index_stored_resources()


def _index_stored_resources() -> None:
    """The rows new writes get (the extraction as of this revision), for every stored
    resource of a type with composite parameters."""
    from fhir_server.search.extract import extract
    from fhir_server.search.registry import params_for, resource_types

    types = sorted(
        t for t in resource_types() if any(p.type == "composite" for p in params_for(t).values())
    )
    conn = op.get_bind()
    resources = sa.table(
        "resources",
        sa.column("pk", sa.BigInteger),
        sa.column("res_type", sa.String),
        sa.column("deleted", sa.Boolean),
        sa.column("body", sa.LargeBinary),
    )
    target = sa.table(
        "idx_composite",
        *(
            sa.column(c)
            for c in (
                "resource_pk",
                "res_type",
                "param",
                "element",
                "part",
                "system",
                "code",
                "text",
                "value",
                "exact",
                "low",
                "high",
                "dlow",
                "dhigh",
                "unit",
                "target_type",
                "target_id",
                "url",
                "uri",
            )
        ),  # fmt: skip
    )
    names = [c.name for c in target.columns]
    last = 0
    while True:
        page = conn.execute(
            sa.select(resources.c.pk, resources.c.res_type, resources.c.body)
            .where(
                resources.c.pk > last,
                resources.c.res_type.in_(types),
                resources.c.deleted == sa.false(),
            )
            .order_by(resources.c.pk)
            .limit(PAGE)
        ).all()
        if not page:
            return
        rows: list[dict[str, object]] = []
        for pk, res_type, body in page:
            try:
                found = extract(json.loads(body)).composites
            except Exception:  # noqa: BLE001 - an unreadable body is skipped, as on write
                continue
            rows.extend(dict(zip(names, (pk, res_type, *row), strict=True)) for row in found)
        if rows:
            conn.execute(sa.insert(target), rows)
        last = page[-1][0]


def downgrade() -> None:
    op.drop_table("idx_composite")
