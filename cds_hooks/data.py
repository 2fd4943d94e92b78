"""Where a hook's FHIR data comes from: the client's prefetch when it sent one, else our store
read with the caller's access (the same rules as the FHIR API: scopes, patient compartment)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.store.repository import FhirReads

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def bad_request(text: str) -> FhirError:
    return FhirError(400, text, "invalid")


def fhir_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not FHIR_ID.match(value):
        raise bad_request(f"context.{name} must be a FHIR id (got {str(value)[:80]!r})")
    return value


def resources_in(value: Any) -> list[dict[str, Any]]:
    """A prefetched value as resources: a Bundle's entries (matches and includes) or one."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        out = []
        for entry in value.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                out.append(resource)
        return out
    return [value] if isinstance(value.get("resourceType"), str) else []


@dataclass
class HookData:
    """One call's data: `prefetch` as sent (keys with null values count as not sent), `reads`
    with the caller's access, `own` with the server's (only for our own bookkeeping, such as
    acknowledgements, about resources the caller already saw)."""

    prefetch: dict[str, Any]
    reads: FhirReads
    own: FhirReads
    prefetched_keys: set[str] | None = None

    def __post_init__(self) -> None:
        self.prefetched_keys = set()

    def get(self, key: str, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        value = self.prefetch.get(key)
        if value is not None:
            if not isinstance(value, dict):
                raise bad_request(f"prefetch.{key} must be a FHIR resource or Bundle")
            assert self.prefetched_keys is not None
            self.prefetched_keys.add(key)
            return resources_in(value)
        return self.reads.search(res_type, params)

    def by_id(self, res_type: str, ids: list[str]) -> list[dict[str, Any]]:
        """Resources by id, with the caller's access (those it may not see are left out)."""
        wanted = [i for i in dict.fromkeys(ids) if FHIR_ID.match(i)]
        if not wanted:
            return []
        return self.reads.search(res_type, [("_id", ",".join(wanted)), ("_count", "1000")])
