"""Named FHIR operations (`/Type/id/$name`) that packages register, so `dispatch` need not
know them: the AI worker adds $analyze, $approve and $reject without touching the router."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
