"""A client's Subscriptions are its own: what every path (read, search, `_include`, history,
conditional operations, bulk export) asks before showing or changing one.

The owner is the OAuth client recorded when the Subscription was written
(`subscription_owners`). Another client's Subscription does not exist for a caller: it is a
404, never a 403 that would confirm the id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, or_, select

from fhir_server.subscriptions.models import subscription_owners

OWNED_TYPES = frozenset({"Subscription"})
O = subscription_owners.c  # noqa: E741


def owned(requester: str, id_column: Any) -> ColumnElement[bool]:
    """Rows (of an owned type) whose id names a Subscription `requester` owns."""
    return id_column.in_(select(O.sub_id).where(O.requester == requester))  # type: ignore[no-any-return]


def owned_only(
    requester: str, res_type: str | None, type_column: Any, id_column: Any
) -> list[ColumnElement[bool]]:
    """WHERE conditions keeping other clients' Subscriptions out of a query over `res_type`
    (None: every type, as in system history or a search without a type)."""
    if res_type is None:
        return [or_(type_column.notin_(OWNED_TYPES), owned(requester, id_column))]
    return [owned(requester, id_column)] if res_type in OWNED_TYPES else []


def owned_ids(conn: Connection, requester: str, ids: Iterable[str]) -> set[str]:
    """The ids among `ids` that name Subscriptions `requester` owns."""
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            r[0]
            for r in conn.execute(
                select(O.sub_id).where(O.sub_id.in_(chunk), O.requester == requester)
            )
        )
    return found
