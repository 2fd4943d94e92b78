"""Stored conformance resources (StructureDefinition, ValueSet, CodeSystem) by canonical URL,
as the current transaction sees them: what `fhir_server.validation` asks for the profiles and
value sets an operator stored (PUT, `interop import`), so they take effect without a restart.

Why inside the transaction: a Bundle may store a profile and then a resource claiming it,
and on SQLite a second connection would wait for this one's write lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.errors import FhirError
from fhir_server.terminology import service
from fhir_server.validation.valuesets import Codes

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection

    from fhir_server.store.repository import Statements

TYPES = frozenset({"StructureDefinition", "ValueSet", "CodeSystem"})


class StoredConformance:
    """Looks up through `conn` (a transaction's, which `flush` brings up to date first for
    conformance resources, and `flush_all` for any resource a reference may name)."""

    def __init__(
        self,
        conn: Connection,
        sql: Statements,
        base_url: str,
        flush: Callable[[], None] | None = None,
        flush_all: Callable[[], None] | None = None,
    ) -> None:
        self.conn, self.sql, self.base_url = conn, sql, base_url
        self.flush, self.flush_all = flush, flush_all
        # the caller's access policy (api.access.Access, store.apply.Policy): a resource it
        # may not read is absent here, as everywhere (None: it sees everything)
        self.policy: Any = None

    def find(self, res_type: str, url: str) -> dict[str, Any] | None:
        """The stored resource of `res_type` whose `url` is `url` (`|version` ignored)."""
        from fhir_server.search.query import matching_ids

        url = url.split("|", 1)[0]
        if not url:
            return None
        if self.flush is not None:
            self.flush()
        ids = matching_ids(self.conn, res_type, [("url", url)], self.base_url)
        cursor = self.conn.connection.cursor()
        for res_id in sorted(ids):
            cursor.execute(self.sql.current, (res_type, res_id))
            row = cursor.fetchone()
            if row is not None and not row[3] and row[4]:
                body: dict[str, Any] = orjson.loads(row[4])
                if body.get("url") == url:
                    return body
        return None

    def resource(self, reference: str) -> dict[str, Any] | None:
        """The current version of the resource a literal reference names (`Type/id`, or
        under this server's base URL), for a slicing discriminator through `resolve()`; None
        when it is elsewhere, version-specific, not stored (deleted included) or not readable
        by the caller (`policy`)."""
        base = self.base_url.rstrip("/") + "/"
        local = reference.removeprefix(base) if self.base_url else reference
        parts = local.split("/")
        if len(parts) != 2 or "://" in local or not all(parts):
            return None
        if self.policy is not None:
            try:
                self.policy.require("r", parts[0])
                self.policy.check_stored(self.conn, "r", parts[0], parts[1])
            except FhirError as exc:
                if exc.status != 403:
                    raise
                return None
        if self.flush_all is not None:  # the target may be any type this transaction wrote
            self.flush_all()
        cursor = self.conn.connection.cursor()
        cursor.execute(self.sql.current, (parts[0], parts[1]))
        row = cursor.fetchone()
        if row is None or row[3] or not row[4]:
            return None
        body: dict[str, Any] = orjson.loads(row[4])
        return body

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        return self.find("StructureDefinition", url)

    def value_set_codes(self, url: str) -> Codes | None:
        """A stored ValueSet's codes, expanded by the terminology service over what this
        transaction sees; None when it is not stored or draws on a system not held here."""
        if self.find("ValueSet", url) is None:
            return None
        return service().within(self.find).codes(url)
