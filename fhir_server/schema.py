"""Tables of the canonical store (below both `fhir_server.store` and `fhir_server.search`).

`resources` holds the current version of every resource (its JSON body exactly as served, so a
read never re-parses it); `resource_versions` keeps every version for history and vread. Search
never looks inside bodies: the `idx_*` tables, one per search-parameter kind, are rewritten for
a resource each time it changes. `outbox` records every change for consumers that run after
commit (DESIGN.md, "The one write path").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    literal_column,
)
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=True, doc="JSON as served; NULL once deleted"),
    UniqueConstraint("res_type", "res_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False, doc="POST, PUT, PATCH or DELETE"),
    Column("body", LargeBinary, nullable=True),
    UniqueConstraint("res_type", "res_id", "version_id"),
    Index("ix_resource_versions_updated", "last_updated"),
    Index("ix_resource_versions_type_updated", "res_type", "last_updated"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(16), nullable=False, doc="create, update, patch or delete"),
    Column("created", BigInteger, nullable=False),
    Column("processed", BigInteger, nullable=True),
    Index("ix_outbox_pending", "processed", "pk"),
)

# Read and search events of the audit trail, as written at request time: one compact row each
# (fhir_server/store/audit.py), turned into AuditEvent resources before anything reads those.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("recorded", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("event", Text, nullable=False, doc="the Interactions as a JSON array (audit._pack)"),
)


# Text columns of the index tables hold any FHIR string, of any length. Their B-tree indexes
# cover only the first INDEX_PREFIX characters (a PostgreSQL index row holds ~2.7 kB at most):
# a query tests that prefix to find rows through the index, and the whole value to decide.
INDEX_PREFIX = 128


def prefix_of(column: Any) -> ColumnElement[str]:
    """The indexed prefix of a text column, written exactly as in the index definition (SQLite
    uses an expression index only for the identical expression: literals, not parameters)."""
    return func.substr(column, literal_column("1"), literal_column(str(INDEX_PREFIX)))


def text_equals(column: Any, value: str) -> ColumnElement[bool]:
    """`column = value` through the prefix index: the prefix, then the rest (not the whole
    column: SQLite would substitute the value for the column in the prefix test and then
    not use the index)."""
    if len(value) < INDEX_PREFIX:
        return prefix_of(column) == value  # exact: a longer column has a longer prefix
    rest = func.substr(column, literal_column(str(INDEX_PREFIX + 1)))
    return and_(prefix_of(column) == value[:INDEX_PREFIX], rest == value[INDEX_PREFIX:])


def _index_table(
    name: str,
    *columns: Column,
    indexes: tuple[tuple[str, ...], ...],
    owner: tuple[str, ...] = (),
) -> Table:
    """Every index table shares the owner key, the owner's type and the parameter code.

    The owner index leads with resource_pk (deleting a resource's rows), then `owner`'s
    columns. An indexed column named in `PREFIXED` is indexed by its prefix (`prefix_of`);
    an index ending in resource_pk (covering a search's driving rows) is named with `_pk`."""
    table = Table(
        name,
        metadata,
        Column("resource_pk", PrimaryKey, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        # SQLite only (migration 0020): on PostgreSQL each index row inserted ran one
        # referential-integrity query (~13 per Patient write, ~20 % of the backend's CPU).
        # No resources row is ever deleted (a DELETE keeps the row, marked deleted, and
        # clears its index rows), so the owner always exists.
        ForeignKeyConstraint(["resource_pk"], ["resources.pk"], ondelete="CASCADE").ddl_if(
            dialect="sqlite"
        ),
    )

    def indexed(cols: tuple[str, ...]) -> list[Any]:
        return [prefix_of(table.c[c]) if c in PREFIXED else table.c[c] for c in cols]

    Index(f"ix_{name}_owner", *indexed(("resource_pk", *owner)))
    for cols in indexes:
        named = "_".join(cols[:-1]) + "_pk" if cols[-1] == "resource_pk" else "_".join(cols)
        Index(f"ix_{name}_{named}", *indexed(cols))
    return table


PREFIXED = frozenset({"value", "code", "system", "uri"})


idx_string = _index_table(
    "idx_string",
    Column("value", Text, nullable=False, doc="case- and accent-folded"),
    Column("exact", Text, nullable=False),
    indexes=(("res_type", "param", "value"),),
)
idx_token = _index_table(
    "idx_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    indexes=(("res_type", "param", "code", "system"),),
    owner=("param", "code", "system"),  # a search tests a candidate's code in the index alone
)
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False, doc="UTC epoch microseconds, inclusive"),
    Column("high", BigInteger, nullable=False, doc="UTC epoch microseconds, exclusive"),
    indexes=(("res_type", "param", "low"), ("res_type", "param", "high")),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=False),
    # the owners of a reference (a patient's Observations) from the index alone
    indexes=(
        ("res_type", "param", "target_id", "target_type", "resource_pk"),
        ("target_type", "target_id"),
    ),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("unit", Text, nullable=True),
    indexes=(("res_type", "param", "low"),),
)
idx_number = _index_table(
    "idx_number",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=(("res_type", "param", "low"),),
)
idx_uri = _index_table(
    "idx_uri",
    Column("uri", Text, nullable=False),
    indexes=(("res_type", "param", "uri"),),
)
# composite parameters (`code-value-quantity=...|8480-6$gt100`): one row per component value of
# one element (`element` numbers the elements the composite's expression selects, `part` the
# component), in the columns of that component's kind (a date's range in dlow/dhigh, exact
# integers). Components of one element share (resource_pk, param, element); see
# search/kinds/composite.py.
idx_composite = _index_table(
    "idx_composite",
    Column("element", Integer, nullable=False),
    Column("part", Integer, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    Column("value", Text, nullable=True),
    Column("exact", Text, nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("dlow", BigInteger, nullable=True),
    Column("dhigh", BigInteger, nullable=True),
    Column("unit", Text, nullable=True),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True),
    Column("uri", Text, nullable=True),
    indexes=(
        ("res_type", "param", "part", "code", "system"),
        ("res_type", "param", "part", "target_id"),
        ("resource_pk", "param", "element", "part"),
    ),
)

INDEX_TABLES = {
    "strings": idx_string,
    "tokens": idx_token,
    "dates": idx_date,
    "references": idx_reference,
    "quantities": idx_quantity,
    "numbers": idx_number,
    "uris": idx_uri,
    "composites": idx_composite,
}
