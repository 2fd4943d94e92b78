"""Tables of the OpenEMR bridge, on the store's `metadata` so one Alembic history holds them.

`openemr_records` remembers, per OpenEMR patient, a digest of what was last applied and the
canonical versions it produced: an unchanged patient costs no write on the next sync, and the
summary can tell created from updated from unchanged. `openemr_state` keeps sync progress.
`openemr_launches` holds an EHR launch between /openemr/launch and OpenEMR's redirect back.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table, Text

from fhir_server.store.models import metadata

records = Table(
    "openemr_records",
    metadata,
    Column("source_key", String(128), primary_key=True, doc="OpenEMR patient uuid (or pid:N)"),
    Column("patient_id", String(64), nullable=True, doc="canonical Patient id"),
    Column("digest", String(64), nullable=False),
    Column("versions", Text, nullable=False, doc="JSON: entry url -> version applied"),
    Column("synced", BigInteger, nullable=False, doc="UTC epoch seconds"),
)

state = Table(
    "openemr_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

launches = Table(
    "openemr_launches",
    metadata,
    Column("state", String(64), primary_key=True),
    Column("browser", String(64), nullable=False, doc="hash of the cookie that binds the browser"),
    Column("iss", Text, nullable=False),
    Column("verifier", String(128), nullable=False, doc="PKCE code_verifier"),
    Column("token_endpoint", Text, nullable=False),
    Column("expires", BigInteger, nullable=False),
)
