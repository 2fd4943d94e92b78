"""JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) on a stored resource's content."""

from __future__ import annotations

import base64
from typing import Any

import jsonpatch

from fhir_server import limits
from fhir_server.errors import FhirError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH)


def apply_patch(resource: dict[str, Any], document: Any, content_type: str) -> dict[str, Any]:
    """JSON Patch (RFC 6902) or JSON merge patch (RFC 7386) on a resource (changed in place)."""
    identity = (resource.get("id"), resource.get("resourceType"))
    if content_type == "application/merge-patch+json":
        if not isinstance(document, dict):
            raise bad_request("A merge patch must be a JSON object")
        patched = _merge(resource, document)
    else:
        if isinstance(document, dict) and document.get("resourceType") == "Binary":
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
