"""The channels' FHIR reads (`fhir_server.store.repository.FhirReads`) over the REST dispatch,
so a channel reads with exactly the rules of the FHIR API without importing it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fhir_server import fhirjson
from fhir_server.api.context import Context, FhirRequest
from fhir_server.api.router import dispatch
from fhir_server.store.repository import Store


@dataclass(frozen=True)
class ApiReads:
    ctx: Context

    @property
    def store(self) -> Store:
        return self.ctx.store

    def search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        resp = dispatch(self.ctx, FhirRequest("GET", [res_type], params))
        body = fhirjson.loads(resp.body or b"{}")
        return [e["resource"] for e in body.get("entry") or []
                if e.get("search", {}).get("mode", "match") == "match"]  # fmt: skip

    def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        resp = dispatch(self.ctx, FhirRequest("GET", [res_type, res_id]))
        body: dict[str, Any] = fhirjson.loads(resp.body or b"{}")
        return body

    def with_access(self, access: Any) -> ApiReads:
        return ApiReads(replace(self.ctx, access=access))
