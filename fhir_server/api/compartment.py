"""The Patient compartment: `Patient/{id}/{type}` searches and the `$everything` operation
(registered like every other operation, at composition)."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _read_current
from fhir_server.api.operations import Operation, Operations
from fhir_server.api.search import search
from fhir_server.errors import not_found
from fhir_server.search.query import Row, bodies_of, everything_rows
from fhir_server.search.registry import patient_compartment, resource_types

EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
EVERYTHING_LIMIT = 10_000  # rows of one patient's record considered (bounded work)


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
    """The patient, its compartment (mode "match") and what those resources reference, one
    level (mode "include": Practitioners, Organizations, Medications, ...), each row passed
    through the access policy (a confined grant sees no other patient's resources through a
    reference); one Bundle, or pages when the client gives `_count` (then `_offset` in the
    next links), across both parts."""
    if ctx.access is not None:
        ctx.access.require("s", "*")
    _read_current(ctx, "Patient", patient_id)
    count, offset = EVERYTHING_LIMIT, 0  # R4: one Bundle unless the client asks for pages
    for name, value in req.query:
        if name == "_count":
            count = min(limits.parse_int(name, value), ctx.max_count)
        elif name == "_offset":
            offset = limits.parse_int(name, value)
    with ctx.read_connection() as conn, limits.deadline():
        rows: list[Row] = everything_rows(conn, patient_id, EVERYTHING_LIMIT)
        if ctx.access is not None:  # keep the order: pages must not shift
            seen = {(r.res_type, r.res_id) for r in ctx.access.filter_rows(conn, rows)}
            rows = [r for r in rows if (r.res_type, r.res_id) in seen]
        page = bodies_of(conn, rows[offset : offset + count])
    entries = [bundling.search_entry(ctx.base_url, row, row.body) for row in page]
    path = f"Patient/{patient_id}/$everything"
    links = bundling.page_links(ctx.base_url, path, [], count, offset, len(rows), len(page))
    return FhirResponse(200, bundling.bundle_bytes("searchset", entries, len(rows), links))


def register(operations: Operations) -> None:
    operations.register(
        Operation("Patient", "$everything", everything, frozenset({"GET"}), "r", EVERYTHING)
    )
