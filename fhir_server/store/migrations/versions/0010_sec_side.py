"""sec-side: removed OAuth clients, Subscription header secrets kept out of the resources

Revision ID: 0010_sec_side
Revises: 0009_subscriptions

Subscriptions stored before this revision hold their `channel.header` values in the resource
(and every version of it): they move to `subscription_secrets` and the stored bodies keep only
the header names, as `fhir_server.subscriptions.service.keep_secrets` does for new writes.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0010_sec_side"
down_revision = "0009_subscriptions"
branch_labels = None
depends_on = None

REDACTED = "[redacted]"


def upgrade() -> None:
    op.create_table(
        "auth_removed_clients",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_auth_removed_clients")),
    )
    secrets = op.create_table(
        "subscription_secrets",
        sa.Column("sub_id", sa.String(length=64), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sub_id", name=op.f("pk_subscription_secrets")),
    )
    conn = op.get_bind()
    for name in ("resources", "resource_versions"):
        table = sa.table(
            name,
            sa.column("pk", sa.BigInteger),
            sa.column("res_type", sa.String),
            sa.column("res_id", sa.String),
            sa.column("body", sa.LargeBinary),
        )
        rows = conn.execute(
            sa.select(table.c.pk, table.c.res_id, table.c.body).where(
                table.c.res_type == "Subscription", table.c.body.is_not(None)
            )
        ).all()
        for pk, res_id, body in rows:
            resource = json.loads(body)
            channel = resource.get("channel")
            headers = channel.get("header") if isinstance(channel, dict) else None
            if not isinstance(headers, list) or not headers:
                continue
            if name == "resources":
                conn.execute(sa.insert(secrets).values(sub_id=res_id, headers=json.dumps(headers)))
            channel["header"] = [
                f"{h.partition(':')[0].strip()}: {REDACTED}" if ":" in str(h) else REDACTED
                for h in headers
            ]
            conn.execute(
                sa.update(table)
                .where(table.c.pk == pk)
                .values(body=json.dumps(resource, separators=(",", ":")).encode())
            )


def downgrade() -> None:
    op.drop_table("subscription_secrets")
    op.drop_table("auth_removed_clients")
