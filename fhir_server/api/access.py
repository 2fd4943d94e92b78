"""The hook through which an authorization policy sees every interaction.

`fhir_server` knows nothing about OAuth: a request's `Context.access` (None when auth is off)
is asked before each interaction (`require`), narrows every search (`search_conditions`) and
every search behind another operation (`visible_conditions`: conditional create, update, delete
and patch, conditional references, chains and `_has`), vets single resources that are read or
overwritten (`check_stored`), new content (`check_body`), and the extra rows that
`_include`/`_revinclude` pull in (`filter_rows`). What the caller may not see is treated as
absent, never as a different answer. Every refusal is a `FhirError` with status 403.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, FromClause

from fhir_server.search.query import Row
from fhir_server.store.models import resources


class Access(Protocol):
    def require(self, perm: str, res_type: str) -> None:
        """Refuse unless permission `perm` (one of c, r, u, d, s) is granted on `res_type`."""

    def require_unconfined(self, perm: str, res_type: str, why: str) -> None:
        """Refuse unless the permission is granted without compartment or query limits."""

    def search_conditions(self, res_type: str) -> list[ColumnElement[bool]]:
        """Extra WHERE conditions that keep a search inside what the grant may see."""

    def history_conditions(self, res_type: str | None) -> list[ColumnElement[bool]]:
        """Extra WHERE conditions on `resource_versions` for type (or, with None, system)
        history: versions the grant may never see stay out (other clients' Subscriptions)."""

    def visible_conditions(
        self, res_type: str, rows: FromClause = resources
    ) -> list[ColumnElement[bool]]:
        """Conditions on `rows` (the resources table or an alias of it) keeping a search
        behind another operation to what the grant may see; [] when it sees everything."""

    def check_stored(self, conn: Connection, perm: str, res_type: str, res_id: str) -> None:
        """Refuse when an existing resource lies outside what the grant may see or change
        (and an update that would create a resource the grant may not create)."""

    def judges_stored(self, perm: str, res_type: str) -> bool:
        """Whether `check_stored` would look at the stored resource at all (False: it
        accepts any id, so no connection need be taken for it)."""

    def check_body(
        self, perm: str, resource: Any, resolve: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Refuse content that would land outside what the grant may write; `resolve` (when
        the content must be judged) first replaces its conditional references in place."""

    def filter_rows(self, conn: Connection, rows: Sequence[Row]) -> list[Row]:
        """The included rows the grant may see."""

    def require_system(self, perm: str, res_type: str, why: str) -> None:
        """Refuse unless a backend-services (`system/`) scope grants `perm` on `res_type`
        without query limits: population-level operations (bulk export and import)."""

    def requester(self) -> str:
        """Who is asking (the OAuth client): bulk jobs and their files are served to it alone."""

    def describe(self) -> dict[str, Any]:
        """The grant as JSON, kept with a Subscription so that its notifications are later
        judged with exactly this authority (see interop.app for the way back)."""
