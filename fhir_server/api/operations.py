"""Named FHIR operations (`/Type/id/$name`) that packages register, so `dispatch` need not
know them: the AI worker adds $analyze, $approve and $reject without touching the router."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from fhir_server.api.interactions import Context, FhirRequest, FhirResponse

InstanceHandler = Callable[["Context", "FhirRequest", str], "FhirResponse"]


@dataclass(frozen=True)
class Operation:
    res_type: str
    name: str  # with the leading "$"
    handler: InstanceHandler  # (ctx, request, resource id) -> response
    methods: frozenset[str] = frozenset({"POST"})
    perm: str = "r"  # what the caller needs on the target resource before the handler runs
    definition: str = ""  # canonical URL of its OperationDefinition, for the CapabilityStatement


@dataclass
class Operations:
    """Instance-level operations by (resource type, name)."""

    table: dict[tuple[str, str], Operation] = field(default_factory=dict)

    def register(self, op: Operation) -> None:
        if not op.name.startswith("$"):
            raise ValueError(f"an operation name starts with '$': {op.name}")
        self.table[(op.res_type, op.name)] = op

    def find(self, res_type: str, name: str) -> Operation | None:
        return self.table.get((res_type, name))

    def advertise(self, capability: bytes) -> bytes:
        """The CapabilityStatement with the registered operations listed on their types."""
        if not self.table:
            return capability
        statement = orjson.loads(capability)
        by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
        for (res_type, name), op in sorted(self.table.items()):
            entry = by_type.get(res_type)
            if entry is not None:
                item = {"name": name[1:], "definition": op.definition or f"urn:interop:{name[1:]}"}
                entry.setdefault("operation", []).append(item)
        return orjson.dumps(statement)
