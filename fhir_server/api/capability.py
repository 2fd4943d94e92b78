"""The CapabilityStatement, generated from what the server really supports.

Types come from the registry, search parameters from the same table the query compiler uses
(only the kinds it can execute), operations from the operation registry (`Operations.advertise`,
at composition); nothing is listed by hand, so the statement cannot drift from the behaviour.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import orjson

from fhir_server.clock import now_us, to_instant
from fhir_server.search.query import SUPPORTED_KINDS
from fhir_server.search.registry import definition_url, params_for, resource_types

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


def capability_statement(
    base_url: str,
    software_version: str,
    auth_enabled: bool,
    security_extensions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": [_resource(t) for t in sorted(resource_types())],
        "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        "searchParam": [
            {"name": "_lastUpdated", "type": "date"},
            {"name": "_id", "type": "token"},
        ],
        "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
        "extension": [
            {  # R4 Subscriptions, websocket channel (fhir_server.subscriptions.websocket)
                "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                "valueUrl": _websocket_url(base_url),
            }
        ],
    }
    if auth_enabled:
        rest["security"] = {
            "cors": True,
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "description": (
                "Bearer tokens issued by this server's SMART-on-FHIR authorization server"
            ),
        }
        if security_extensions:
            rest["security"]["extension"] = security_extensions
    return {
        "resourceType": "CapabilityStatement",
        "id": "interop-server",
        "url": f"{base_url}/metadata",
        "name": "InteropServer",
        "title": "Interop server FHIR R4 API",
        "status": "active",
        "date": to_instant(now_us())[:10],
        "publisher": "interop-server project",
        "kind": "instance",
        "software": {"name": "interop-server", "version": software_version},
        "implementation": {"description": "HL7/FHIR interoperability hub", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/merge-patch+json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "rest": [rest],
    }


def _websocket_url(base_url: str) -> str:
    scheme, _, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/websocket"


@cache
def _resource(res_type: str) -> dict[str, Any]:
    params = params_for(res_type)
    searchable = [p for p in params.values() if p.type in SUPPORTED_KINDS]
    references = sorted(p.code for p in searchable if p.type == "reference")
    entry: dict[str, Any] = {
        "type": res_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
        "referencePolicy": ["literal", "logical"],
        "searchInclude": [f"{res_type}:{code}" for code in references],
        "searchRevInclude": _revincludes(res_type),
        "searchParam": [
            _search_param(res_type, p.code, p.type)
            for p in sorted(searchable, key=lambda p: p.code)
            if p.code not in ("_id", "_lastUpdated")
        ]
        + [
            _search_param(res_type, "_id", "token"),
            _search_param(res_type, "_lastUpdated", "date"),
        ],  # fmt: skip
    }
    return entry


def _search_param(res_type: str, code: str, kind: str) -> dict[str, Any]:
    """One searchParam, with the canonical URL of its official definition (resolvable here:
    fhir_server.api.definitions)."""
    url = definition_url(res_type, code)
    return {"name": code, **({"definition": url} if url else {}), "type": kind}


@lru_cache(maxsize=1)
def _revinclude_index() -> dict[str, list[str]]:
    """For each type, the `Source:param` pairs whose reference parameter can point at it."""
    index: dict[str, list[str]] = {}
    for source in sorted(resource_types()):
        for param in params_for(source).values():
            if param.type != "reference":
                continue
            for target in param.targets or ():
                index.setdefault(target, []).append(f"{source}:{param.code}")
    return index


def _revincludes(res_type: str) -> list[str]:
    return sorted(set(_revinclude_index().get(res_type, [])))


def capability_bytes(
    base_url: str,
    software_version: str,
    auth_enabled: bool,
    security_extensions: list[dict[str, Any]] | None = None,
) -> bytes:
    return orjson.dumps(
        capability_statement(base_url, software_version, auth_enabled, security_extensions)
    )
