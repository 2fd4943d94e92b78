"""Tables of the authorization server, on the store's `metadata` so one Alembic history holds them.

Secrets never sit in clear: client secrets, passwords, authorization codes and refresh tokens
are stored as hashes; the signing keys' private halves, which the server must sign with, are
stored encrypted with the operator's secret key (smart_auth/sealing.py). Times are UTC epoch
seconds.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, false

from fhir_server.store.models import metadata

clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("client_type", String(32), nullable=False, doc="public, confidential-secret/-jwks"),
    Column("secret_hash", String(256), nullable=True),
    Column("redirect_uris", Text, nullable=False, doc="JSON list, matched exactly"),
    Column("scope", Text, nullable=False, doc="the scopes the client may ever get"),
    Column("jwks_url", Text, nullable=True),
    Column("jwks", Text, nullable=True, doc="an uploaded JWKS (JSON)"),
    Column("launch_url", Text, nullable=True),
    Column("pkce_exempt", Boolean, nullable=False, default=False),
    Column("can_launch", Boolean, nullable=False, default=False, doc="may POST /auth/launch"),
    Column(
        "verified",
        Boolean,
        nullable=False,
        default=False,
        server_default=false(),
        doc="registered by an operator; false: self-registered (RFC 7591), shown as unverified",
    ),
    Column("created", BigInteger, nullable=False),
)

users = Table(
    "auth_users",
    metadata,
    Column("username", String(128), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("fhir_user", String(200), nullable=True, doc="e.g. Practitioner/123"),
    Column("created", BigInteger, nullable=False),
)

signing_keys = Table(
    "auth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("private_pem", Text, nullable=False, doc="the private key, sealed (AES-GCM)"),
    Column("created", BigInteger, nullable=False),
    Column("retired", BigInteger, nullable=True, doc="no longer signs; still verifies"),
)

authorization_requests = Table(
    "auth_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("params", Text, nullable=False, doc="the validated authorize request (JSON)"),
    Column("csrf", String(64), nullable=False),
    Column("username", String(128), nullable=True, doc="set once the user logged in"),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("expires", BigInteger, nullable=False),
)

authorization_codes = Table(
    "auth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=True),
    Column("username", String(128), nullable=True),
    Column("context", Text, nullable=False, doc="patient, encounter, fhirUser, nonce (JSON)"),
    Column("expires", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

launch_contexts = Table(
    "auth_launches",
    metadata,
    Column("launch_id", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("username", String(128), nullable=True),
    Column("intent", String(64), nullable=True),
    Column("expires", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

refresh_tokens = Table(
    "auth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False, doc="all rotations of one grant"),
    Column("client_id", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    Column("username", String(128), nullable=True),
    Column("context", Text, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False, doc="rotated away"),
    Column("revoked", Boolean, nullable=False, default=False),
    Index("ix_auth_refresh_tokens_family", "family"),
)

used_jti = Table(
    "auth_used_jti",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", BigInteger, nullable=False),
)

revoked_tokens = Table(
    "auth_revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires", BigInteger, nullable=False),
)

removed_clients = Table(
    "auth_removed_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("removed", BigInteger, nullable=False, doc="its tokens stopped working then"),
)

sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("username", String(128), nullable=False),
    Column("client_id", String(128), nullable=False, doc="the app the session may authorize"),
    Column("expires", BigInteger, nullable=False),
)

throttle = Table(
    "auth_throttle",
    metadata,
    Column("key", String(200), primary_key=True, doc="e.g. login-user:NAME, register-addr:IP"),
    Column("count", Integer, nullable=False, doc="failures, or requests in the window"),
    Column("since", BigInteger, nullable=False, doc="last failure, or start of the window"),
    Column("until", BigInteger, nullable=False, doc="refused until then (0: not locked)"),
)
