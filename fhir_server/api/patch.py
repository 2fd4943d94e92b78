"""The patch interaction: JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) on one
resource, within the request limits (`fhir_server.limits`)."""

from __future__ import annotations

from fhir_server import limits
from fhir_server.api.context import (
    PATCH_TYPES,
    Context,
    FhirRequest,
    FhirResponse,
    _if_match,
    _store_write,
    _written,
)
from fhir_server.errors import FhirError
from fhir_server.store.apply import Entry
from fhir_server.store.patch import apply_patch as apply_patch


def patch(ctx: Context, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if req.parsed is not None:
        content_type = "application/json-patch+json"  # Bundle entries carry a Binary/JSON Patch
    if content_type not in PATCH_TYPES:
        raise FhirError(
            415,
            f"Unsupported patch media type '{content_type}'; use application/json-patch+json "
            "or application/merge-patch+json",
            "not-supported",
        )
    document = req.parsed if req.parsed is not None else limits.parse_json(req.body)
    entry = Entry("PATCH", res_type, res_id, resource=document, if_match=_if_match(req))
    entry.patch_type = content_type
    return _written(ctx, req, _store_write(ctx, entry))
