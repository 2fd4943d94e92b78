"""Tables of the CDS Hooks service, on the store's `metadata` so one Alembic history holds them.

- `cds_clients`: the CDS clients (EHRs) an operator registered, by the `iss` of their JWTs,
  with their public keys (a JWKS, or the URL it is fetched from) and the most they may read
  when they send no access token of ours;
- `cds_used_jti`: JWT ids seen, kept until the JWT expires, so a JWT is never accepted twice;
- `cds_cards`: which card (uuid) was issued to which client about which resource, so feedback
  on a card can name what it is about. Cards themselves are computed afresh on every call.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from fhir_server.store.models import metadata

cds_clients = Table(
    "cds_clients",
    metadata,
    Column("iss", String(512), primary_key=True, doc="the `iss` of the client's JWTs"),
    Column("name", String(256), nullable=False),
    Column("jwks_url", Text, nullable=True),
    Column("jwks", Text, nullable=True, doc="a registered JWKS (JSON)"),
    Column("scope", Text, nullable=False, doc="what it reads without an access token of ours"),
    Column("created", BigInteger, nullable=False),
)

cds_used_jti = Table(
    "cds_used_jti",
    metadata,
    Column("iss", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", BigInteger, nullable=False),
    Index("ix_cds_used_jti_expires", "expires"),
)

cds_cards = Table(
    "cds_cards",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("service", String(64), nullable=False),
    Column("iss", String(512), nullable=False),
    Column("focus", Text, nullable=False, doc="JSON: {reference, version, patient}"),
    Column("issued", BigInteger, nullable=False),
    Index("ix_cds_cards_issued", "issued"),
)
