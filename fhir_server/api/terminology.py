"""The terminology operations over HTTP, registered like every other operation:
`ValueSet/$expand`, `ValueSet/$validate-code`, `CodeSystem/$lookup`, `CodeSystem/$subsumes`,
`ConceptMap/$translate`, each at type and instance level, by GET (query parameters) or POST
(a Parameters resource).

Who may call them: read (`r`) on the type they run on (ValueSet, CodeSystem, ConceptMap), as
for reading those resources. These types are in no patient's compartment, so a patient-confined
grant that reads them (`patient/*.rs`) may use the operations; the answers hold no patient
data. Stored CodeSystems, ValueSets and ConceptMaps are written with the ordinary REST
interactions (an operator's `u`/`c` on those types) and take effect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server import fhirjson
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.api.operations import Operation, Operations
from fhir_server.errors import bad_request
from fhir_server.terminology import Terminology
from fhir_server.terminology import operations as ops

SPEC = "http://hl7.org/fhir/OperationDefinition/"
# the lookups that may run on the event loop when the service answers from memory (their
# work is a few dict lookups; an expansion or a translation may be large: on a thread)
INLINE = frozenset({"$validate-code", "$lookup", "$subsumes"})
# (type, operation, function, OperationDefinition id in the R4 specification)
TABLE: tuple[tuple[str, str, Callable[..., dict[str, Any]], str], ...] = (
    ("ValueSet", "$expand", ops.expand, "ValueSet-expand"),
    ("ValueSet", "$validate-code", ops.validate_code, "ValueSet-validate-code"),
    ("CodeSystem", "$lookup", ops.lookup, "CodeSystem-lookup"),
    ("CodeSystem", "$subsumes", ops.subsumes, "CodeSystem-subsumes"),
    ("ConceptMap", "$translate", ops.translate, "ConceptMap-translate"),
)
_COMPLEX = {"valueSet", "coding", "codeableConcept", "codingA", "codingB"}


def params_of(req: FhirRequest) -> ops.Params:
    """GET: the query string; POST: a Parameters resource (complex values and resources)."""
    params = ops.Params()
    for name, value in req.query:
        if not name.startswith("_"):
            params.add(name, value)
    if req.method.upper() != "POST":
        return params
    body = _parse_json(req)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("POST a Parameters resource to a terminology operation")
    for item in body.get("parameter") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad_request("Every parameter needs a name")
        name = item["name"]
        if "resource" in item:
            params.add(name, item["resource"])
            continue
        values = [v for k, v in item.items() if k.startswith("value")]
        if len(values) != 1:
            raise bad_request(f"Parameter '{name}' needs exactly one value[x]")
        value = values[0]
        if isinstance(value, dict) and name not in _COMPLEX:
            raise bad_request(f"Parameter '{name}' takes a simple value")
        params.add(name, value)
    return params


def _handler(function: Callable[..., dict[str, Any]], svc: Terminology) -> Callable[..., Any]:
    def handle(ctx: Context, req: FhirRequest, res_id: str | None = None) -> FhirResponse:
        return FhirResponse(200, fhirjson.dumps(function(svc, params_of(req), res_id)))

    return handle


def register(operations: Operations, svc: Terminology) -> None:
    """The five operations at type and instance level, and a hook that makes a change to a
    stored CodeSystem, ValueSet or ConceptMap visible to the next request."""
    for res_type, name, function, definition in TABLE:
        handle = _handler(function, svc)
        for level in ("type", "instance"):
            operations.register(
                Operation(res_type, name, handle, frozenset({"GET", "POST"}), "r",
                          SPEC + definition, level, listed=level == "type",
                          inline=svc.ready if name in INLINE else None)
            )  # fmt: skip
