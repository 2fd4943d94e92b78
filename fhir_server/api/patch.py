"""The patch interaction: JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) on one
resource, within the request limits (`fhir_server.limits`)."""

from __future__ import annotations

from typing import Any

import jsonpatch

from fhir_server import limits
from fhir_server.api.context import (
    PATCH_TYPES,
    Context,
    FhirRequest,
    FhirResponse,
    _allow_body,
    _if_match,
    _respond_with,
)
from fhir_server.errors import FhirError, bad_request, not_found, precondition_failed


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
    with ctx.write() as tx:
        found = tx.current(res_type, res_id, lock=True)
        if found is None or found[1].deleted:
            raise not_found(f"{res_type}/{res_id} is not known")
        current = found[1]
        expected = _if_match(req)
        if expected is not None and expected != current.version_id:
            raise precondition_failed(
                f"Version conflict: If-Match {expected}, current {current.version_id}"
            )
        patched = apply_patch(current.json(), document, content_type)
        _allow_body(ctx, tx, "u", patched)
        result = tx.update(res_type, res_id, patched, None, method="PATCH")
    return _respond_with(req, 200, result.stored, ctx.base_url, False)


def apply_patch(resource: dict[str, Any], document: Any, content_type: str) -> dict[str, Any]:
    """JSON Patch (RFC 6902) or JSON merge patch (RFC 7386) on a resource (changed in place)."""
    identity = (resource.get("id"), resource.get("resourceType"))
    if content_type == "application/merge-patch+json":
        if not isinstance(document, dict):
            raise bad_request("A merge patch must be a JSON object")
        patched = _merge(resource, document)
    else:
        if isinstance(document, dict) and document.get("resourceType") == "Binary":
            import base64

            try:
                decoded = base64.b64decode(document.get("data", ""))
            except (ValueError, TypeError):
                raise bad_request("The Binary patch does not hold a JSON Patch document") from None
            document = limits.parse_json(decoded)
        if not isinstance(document, list):
            raise bad_request("A JSON Patch must be an array of operations")
        try:
            patched = limits.apply_json_patch(resource, document, _apply_one, _resolve)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise FhirError(422, f"JSON Patch test failed: {exc}", "processing") from None
        except (
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:
            raise FhirError(422, f"JSON Patch could not be applied: {exc}", "processing") from None
    if not isinstance(patched, dict):
        raise FhirError(422, "The patch did not produce a resource", "processing")
    if patched.get("id") != identity[0] or patched.get("resourceType") != identity[1]:
        raise FhirError(422, "A patch may not change id or resourceType", "processing")
    return patched


def _apply_one(document: Any, operation: Any) -> Any:
    """One JSON Patch operation, in place (the document is this request's own copy)."""
    return jsonpatch.JsonPatch([operation]).apply(document, in_place=True)


def _resolve(document: Any, pointer: str) -> Any:
    return jsonpatch.JsonPointer(pointer).resolve(document)


def _merge(target: Any, patch_doc: Any) -> Any:
    if not isinstance(patch_doc, dict):
        return patch_doc
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch_doc.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
