"""The Patient compartment: `Patient/{id}/{type}` searches and the `$everything` operation
(registered like every other operation, at composition)."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _read_current
from fhir_server.api.operations import Operation, Operations
from fhir_server.api.search import search
from fhir_server.errors import not_found
from fhir_server.search.query import Row, everything_rows
from fhir_server.search.registry import patient_compartment, resource_types

EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def search_compartment(
    ctx: Context, req: FhirRequest, patient_id: str, res_type: str
) -> FhirResponse:
    return search(ctx, req, res_type, compartment=patient_id)


def in_compartment(req: FhirRequest, res_type: str) -> None:
    """Only the types the Patient compartment defines (and Patient) are searched in it."""
    known = res_type in resource_types()
    if not (known and (patient_compartment(res_type) or res_type == "Patient")):
        path = "/".join(p for p in req.path if p)
        raise not_found(f"No interaction at /{path}")


def everything(ctx: Context, req: FhirRequest, patient_id: str) -> FhirResponse:
    if ctx.access is not None:
        ctx.access.require("s", "*")
    _read_current(ctx, "Patient", patient_id)
    with ctx.read_connection() as conn, limits.deadline():
        rows: list[Row] = everything_rows(conn, patient_id, 10_000)
        if ctx.access is not None:
            rows = ctx.access.filter_rows(conn, rows)
    entries = [bundling.search_entry(ctx.base_url, row, row.body) for row in rows]
    links = [("self", f"{ctx.base_url}/Patient/{patient_id}/$everything")]
    return FhirResponse(200, bundling.bundle_bytes("searchset", entries, len(rows), links))


def register(operations: Operations) -> None:
    operations.register(
        Operation("Patient", "$everything", everything, frozenset({"GET"}), "r", EVERYTHING)
    )
