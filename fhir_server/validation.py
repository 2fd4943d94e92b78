"""Resource validation against the fhir.resources R4B models, with errors that name the field."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server.errors import bad_request
from fhir_server.limits import check_document
from fhir_server.search.registry import resource_types

# Types the R4B models do not know under their R4 name; checked structurally only.
_UNMODELLED: set[str] = set()


def validate_resource(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a parsed JSON body is a valid R4 resource; return it unchanged.

    The stored body is the client's JSON (plus server meta), not a re-serialization of the
    model: validation costs about 0.05 ms, re-serializing would cost more and reorder fields.
    """
    if not isinstance(resource, dict):
        raise bad_request("The body must be a JSON object holding a FHIR resource")
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        raise bad_request("The resource has no resourceType", ["resourceType"])
    if res_type not in resource_types():
        raise bad_request(f"Unknown resource type '{res_type}'", ["resourceType"])
    if expected_type is not None and res_type != expected_type:
        raise bad_request(
            f"resourceType '{res_type}' does not match the URL type '{expected_type}'",
            ["resourceType"],
        )
    if "id" in resource and not _valid_id(resource["id"]):
        raise bad_request("Resource id must be 1-64 characters of A-Z a-z 0-9 - .", ["id"])
    check_document(resource, f"The {res_type}")  # before the models recurse into it
    if res_type in _UNMODELLED:
        return resource
    try:
        model = get_fhir_model_class(res_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        _UNMODELLED.add(res_type)
        return resource
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise _describe(res_type, exc) from None
    except (ValueError, TypeError) as exc:
        raise bad_request(f"Invalid {res_type}: {exc}") from None
    return resource


def _describe(res_type: str, exc: ValidationError) -> Exception:
    errors = exc.errors(include_url=False)
    parts = []
    paths = []
    for err in errors[:10]:
        path = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        paths.append(f"{res_type}.{path}" if path else res_type)
        parts.append(f"{path or res_type}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return bad_request(f"Invalid {res_type}: " + "; ".join(parts) + more, paths)


def _valid_id(value: Any) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-.") for c in value)
