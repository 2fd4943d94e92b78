"""The one registry through which packages extend the FHIR API at composition (`interop.app`):

- operations (`$name` at system, type or instance level, e.g. `$everything`, Bulk Data's
  `$export`/`$import` and its status and file URLs, the AI worker's `$analyze`), which the router
  matches like its own rows and the CapabilityStatement lists;
- write hooks, run around every request on a resource type (Subscriptions vet and own theirs).

So `fhir_server.api` imports none of the packages that extend it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from fhir_server.api.context import Context, FhirRequest, FhirResponse

# (ctx, request, *the path variables of the operation's pattern) -> response; an
# instance-level operation gets the resource id, `$bulk-file/{job}/{name}` gets job and name
Handler = Callable[..., "FhirResponse"]
LEVELS = ("system", "type", "instance")


@dataclass(frozen=True)
class Operation:
    res_type: str  # "" at system level
    name: str  # with the leading "$"
    handler: Handler
    methods: frozenset[str] = frozenset({"POST"})
    perm: str = "r"  # what the caller needs on the target before the handler runs; "": nothing
    definition: str = ""  # canonical URL of its OperationDefinition, for the CapabilityStatement
    level: str = "instance"  # system (`$name`), type (`Type/$name`), instance (`Type/{id}/$name`)
    tail: tuple[str, ...] = ()  # further path variables: `$bulk-status/{job}`
    listed: bool = True  # in the CapabilityStatement (not for status and file URLs)
    # when set and true at call time, the handler may run on the event loop (no thread hop):
    # CPU-only work of a few microseconds that touches no database now (see router.inline)
    inline: Callable[[], bool] | None = None

    @property
    def pattern(self) -> str:
        head = {"system": [], "type": [self.res_type], "instance": [self.res_type, "{id}"]}
        return "/".join([*head[self.level], self.name, *(f"{{{v}}}" for v in self.tail)])


class WriteHook(Protocol):
    """Runs around every request on its resource type (a REST call or a Bundle entry)."""

    def before_write(self, ctx: Context, req: FhirRequest) -> None: ...

    def after_write(self, ctx: Context, response: FhirResponse) -> None: ...


@dataclass
class Operations:
    """Registered operations and write hooks (filled once, at composition)."""

    table: list[Operation] = field(default_factory=list)
    # the OperationDefinitions of the server's own operations, by canonical URL (the R4 ones
    # come from the specification: fhir_server.api.definitions)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    hooks: dict[str, list[WriteHook]] = field(default_factory=dict)
    compiled: Any = field(default=None, repr=False)  # the router's index, rebuilt on change

    def register(self, op: Operation) -> None:
        if not op.name.startswith("$"):
            raise ValueError(f"an operation name starts with '$': {op.name}")
        if op.level not in LEVELS or (op.level == "system") != (not op.res_type):
            raise ValueError(f"{op.name}: a system operation has no type, the others one")
        taken = {(o.pattern, m) for o in self.table for m in o.methods}
        if any((op.pattern, m) in taken for m in op.methods):
            raise ValueError(f"{op.pattern} is already registered")
        self.table.append(op)
        self.compiled = None

    def define(self, definition: dict[str, Any]) -> str:
        """Make an own OperationDefinition readable on the server; returns its URL (for
        `Operation.definition`)."""
        self.definitions[definition["url"]] = definition
        return str(definition["url"])

    def hook(self, res_type: str, hook: WriteHook) -> None:
        self.hooks.setdefault(res_type, []).append(hook)

    def advertise(self, capability: bytes) -> bytes:
        """The CapabilityStatement with the registered operations listed on their types (or
        on the server, for system-level ones), in the order they were registered."""
        listed = [op for op in self.table if op.listed]
        if not listed:
            return capability
        statement = orjson.loads(capability)
        rest = statement["rest"][0]
        by_type = {r["type"]: r for r in rest["resource"]}
        for op in listed:
            entry = rest if op.level == "system" else by_type.get(op.res_type)
            if entry is None:
                continue
            name = op.name[1:]
            item = {"name": name, "definition": op.definition or f"urn:interop:{name}"}
            known = entry.setdefault("operation", [])
            if item["name"] not in {o["name"] for o in known}:
                known.append(item)
        return orjson.dumps(statement)
