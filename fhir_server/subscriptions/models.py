"""Tables behind Subscriptions: who owns each one, and the durable notification queue.

The owner row keeps the authority the subscription was created with, so a notification is
only ever sent about what that client could read itself. The queue holds a notification until
its endpoint has taken it: a receiver that is down gets it later. The secrets table keeps the
`channel.header` values (credentials for the endpoint), which the stored resource only names.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from fhir_server.store.models import PrimaryKey, metadata

subscription_owners = Table(
    "subscription_owners",
    metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("requester", String(255), nullable=False, doc="client id (websocket binds)"),
    Column("grant", Text, nullable=False, doc="the creator's grant as JSON"),
    Column("since", BigInteger, nullable=True, doc="its client's last write: notify from then"),
)

subscription_secrets = Table(
    "subscription_secrets",
    metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("headers", Text, nullable=False, doc="channel.header as written (JSON list)"),
)

subscription_queue = Table(
    "subscription_queue",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("sub_id", String(64), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("created", BigInteger, nullable=False, doc="UTC epoch microseconds"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", BigInteger, nullable=False),
    Column("last_error", Text, nullable=True),
    Index("ix_subscription_queue_due", "next_attempt", "pk"),
    Index("ix_subscription_queue_sub", "sub_id", "pk"),
)
