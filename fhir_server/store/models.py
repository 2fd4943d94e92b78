"""The store's tables, kept importable here; they live in `fhir_server.schema`, the layer
below both the store and search (so search never imports the store)."""

from fhir_server.schema import (
    INDEX_PREFIX,
    INDEX_TABLES,
    PREFIXED,
    PrimaryKey,
    idx_composite,
    idx_date,
    idx_number,
    idx_quantity,
    idx_reference,
    idx_string,
    idx_token,
    idx_uri,
    metadata,
    outbox,
    prefix_of,
    resource_versions,
    resources,
    text_equals,
)

__all__ = [
    "INDEX_PREFIX",
    "INDEX_TABLES",
    "PREFIXED",
    "PrimaryKey",
    "idx_composite",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_string",
    "idx_token",
    "idx_uri",
    "metadata",
    "outbox",
    "prefix_of",
    "resource_versions",
    "resources",
    "text_equals",
]
