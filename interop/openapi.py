"""/openapi.json from the CapabilityStatement, and /docs (Swagger UI) with local assets.

The FHIR API is one catch-all route (`interop.app`), so FastAPI's own schema has no paths; the
CapabilityStatement already says, per resource type, which interactions, search parameters and
operations the server supports. This module turns that into OpenAPI 3.1, so the description
can never disagree with `/fhir/metadata`. Swagger UI's files are vendored from the npm package
`swagger-ui-dist` (interop/static/swagger-ui, Apache-2.0): no CDN is contacted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SWAGGER_ASSETS = Path(__file__).parent / "static" / "swagger-ui"
FHIR_JSON = "application/fhir+json"
RESULT_PARAMS = [
    ("_count", "integer", "results per page"),
    ("_sort", "string", "comma-separated parameters to sort by, '-' for descending"),
    ("_include", "string", "also return resources this one references (Type:param)"),
    ("_revinclude", "string", "also return resources that reference this one (Type:param)"),
    ("_summary", "string", "true, count, data, text or false"),
    ("_elements", "string", "comma-separated elements to return"),
    ("_total", "string", "none, estimate or accurate"),
]
SEARCH_TYPES = {
    "number": "a number, with prefix eq ne gt lt ge le sa eb ap",
    "date": "a date/time, with prefix eq ne gt lt ge le sa eb ap",
    "string": "text (starts with; :exact, :contains)",
    "token": "[system|]code (:not, :text, :missing)",
    "reference": "[Type/]id or a URL (:Type, chaining with '.')",
    "quantity": "[prefix]number|system|code",
    "uri": "a URI (:below, :above)",
    "composite": "value$value",
    "special": "as the parameter defines",
}


def _resource_schema(rtype: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": rtype}},
        "additionalProperties": True,
        "externalDocs": {"url": f"https://hl7.org/fhir/R4/{rtype.lower()}.html"},
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {FHIR_JSON: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {FHIR_JSON: {"schema": schema or {"$ref": "#/components/schemas/Resource"}}},
    }


def _responses(ok: str, schema: dict[str, Any] | None = None, code: str = "200") -> dict:
    return {
        code: _answer(ok, schema),
        "default": _answer(
            "an OperationOutcome saying what went wrong",
            {"$ref": "#/components/schemas/OperationOutcome"},
        ),  # fmt: skip
    }


def _search_params(resource: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for sp in resource.get("searchParam") or []:
        kind = sp.get("type", "string")
        text = f"{kind}: {SEARCH_TYPES.get(kind, '')}".rstrip(": ")
        if sp.get("documentation"):
            text = f"{sp['documentation']} ({text})"
        params.append({
            "name": sp["name"], "in": "query", "required": False,
            "description": text, "schema": {"type": "string"},
        })  # fmt: skip
    params += [{"$ref": f"#/components/parameters/{name}"} for name, _, _ in RESULT_PARAMS]
    return params


def from_capability(capability: dict[str, Any], prefix: str = "/fhir") -> dict[str, Any]:
    """OpenAPI 3.1 for the FHIR API described by `capability` (a CapabilityStatement)."""
    rest = (capability.get("rest") or [{}])[0]
    paths: dict[str, dict[str, Any]] = {}
    bundle = {"$ref": "#/components/schemas/Bundle"}
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the logical id"}  # fmt: skip
    vid = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the version id"}  # fmt: skip
    paths[f"{prefix}/metadata"] = {"get": {
        "tags": ["System"], "summary": "the CapabilityStatement", "operationId": "capabilities",
        "security": [], "responses": _responses("the server's CapabilityStatement"),
    }}  # fmt: skip
    system = {i.get("code") for i in rest.get("interaction") or []}
    if system & {"transaction", "batch"}:
        paths[prefix] = {"post": {
            "tags": ["System"], "summary": "process a batch or transaction Bundle",
            "operationId": "batchOrTransaction", "requestBody": _body(bundle),
            "responses": _responses("the batch-response or transaction-response", bundle),
        }}  # fmt: skip
    if "history-system" in system:
        paths[f"{prefix}/_history"] = {"get": {
            "tags": ["System"], "summary": "history of every resource",
            "operationId": "historySystem", "responses": _responses("a history Bundle", bundle),
        }}  # fmt: skip
    for op in rest.get("operation") or []:
        paths[f"{prefix}/${op['name']}"] = _operation("System", op, "system", [])
    for resource in rest.get("resource") or []:
        rtype = resource["type"]
        codes = {i.get("code") for i in resource.get("interaction") or []}
        schema = {"$ref": f"#/components/schemas/{rtype}"}
        type_path: dict[str, Any] = {}
        if "search-type" in codes:
            type_path["get"] = {
                "tags": [rtype], "summary": f"search {rtype}", "operationId": f"search{rtype}",
                "parameters": _search_params(resource),
                "responses": _responses(f"a searchset Bundle of {rtype}", bundle),
            }  # fmt: skip
            paths[f"{prefix}/{rtype}/_search"] = {"post": {
                "tags": [rtype], "summary": f"search {rtype} (form-encoded parameters)",
                "operationId": f"searchPost{rtype}",
                "requestBody": {"content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                "responses": _responses(f"a searchset Bundle of {rtype}", bundle),
            }}  # fmt: skip
        if "create" in codes:
            type_path["post"] = {
                "tags": [rtype], "summary": f"create a {rtype}", "operationId": f"create{rtype}",
                "parameters": [{"name": "If-None-Exist", "in": "header", "required": False,
                                "schema": {"type": "string"},
                                "description": "conditional create: a search query"}],
                "requestBody": _body(schema),
                "responses": _responses("created", schema, "201"),
            }  # fmt: skip
        if type_path:
            paths[f"{prefix}/{rtype}"] = type_path
        instance: dict[str, Any] = {}
        if "read" in codes:
            instance["get"] = {"tags": [rtype], "summary": f"read a {rtype}",
                               "operationId": f"read{rtype}", "parameters": [rid],
                               "responses": _responses(f"the {rtype}", schema)}  # fmt: skip
        if "update" in codes:
            instance["put"] = {"tags": [rtype], "summary": f"update (or create) a {rtype}",
                               "operationId": f"update{rtype}", "parameters": [rid],
                               "requestBody": _body(schema),
                               "responses": _responses("updated", schema)}  # fmt: skip
        if "patch" in codes:
            instance["patch"] = {
                "tags": [rtype], "summary": f"patch a {rtype} (JSON Patch or merge patch)",
                "operationId": f"patch{rtype}", "parameters": [rid],
                "requestBody": {"required": True, "content": {
                    "application/json-patch+json": {"schema": {"type": "array"}},
                    "application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": _responses("patched", schema),
            }  # fmt: skip
        if "delete" in codes:
            instance["delete"] = {"tags": [rtype], "summary": f"delete a {rtype}",
                                  "operationId": f"delete{rtype}", "parameters": [rid],
                                  "responses": {"200": {"description": "deleted"},
                                                "204": {"description": "deleted"}}}  # fmt: skip
        if instance:
            paths[f"{prefix}/{rtype}/{{id}}"] = instance
        if "history-instance" in codes:
            paths[f"{prefix}/{rtype}/{{id}}/_history"] = {"get": {
                "tags": [rtype], "summary": f"history of one {rtype}",
                "operationId": f"history{rtype}", "parameters": [rid],
                "responses": _responses("a history Bundle", bundle),
            }}  # fmt: skip
        if "vread" in codes:
            paths[f"{prefix}/{rtype}/{{id}}/_history/{{vid}}"] = {"get": {
                "tags": [rtype], "summary": f"read one version of a {rtype}",
                "operationId": f"vread{rtype}", "parameters": [rid, vid],
                "responses": _responses(f"that version of the {rtype}", schema),
            }}  # fmt: skip
        if "history-type" in codes:
            paths[f"{prefix}/{rtype}/_history"] = {"get": {
                "tags": [rtype], "summary": f"history of every {rtype}",
                "operationId": f"historyType{rtype}",
                "responses": _responses("a history Bundle", bundle),
            }}  # fmt: skip
        for op in resource.get("operation") or []:
            paths[f"{prefix}/{rtype}/${op['name']}"] = _operation(rtype, op, "type", [])
            paths[f"{prefix}/{rtype}/{{id}}/${op['name']}"] = _operation(
                rtype, op, "instance", [rid]
            )
    types = sorted(r["type"] for r in rest.get("resource") or [])
    schemas = {t: _resource_schema(t) for t in {*types, "Bundle", "OperationOutcome"}}
    schemas["Resource"] = {"type": "object", "required": ["resourceType"],
                           "properties": {"resourceType": {"type": "string"}}}  # fmt: skip
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"{capability.get('software', {}).get('name', 'FHIR server')} FHIR R4 API",
            "version": str(capability.get("software", {}).get("version", "")),
            "description": "Generated from the CapabilityStatement at "
            f"{prefix}/metadata: every resource type, interaction, search parameter and "
            "operation it lists. Resource bodies follow the FHIR R4 specification.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                name: {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "schema": {"type": kind},
                    "description": text,
                }
                for name, kind, text in RESULT_PARAMS
            },  # fmt: skip
        },
        "tags": [{"name": "System"}] + [{"name": t} for t in types],
    }
    security = _security(rest)
    if security:
        doc["components"]["securitySchemes"] = security
        doc["security"] = [{name: []} for name in security]
    return doc


def _operation(tag: str, op: dict[str, Any], level: str, params: list[dict]) -> dict:
    name = op["name"]
    ident = "".join(ch for ch in f"{level}{tag}{name}" if ch.isalnum())
    text = f"${name} at {level} level; defined by {op.get('definition', 'this server')}"
    answer = _responses(f"the result of ${name}")
    return {
        "get": {"tags": [tag], "summary": f"${name}", "description": text,
                "operationId": f"get{ident}", "parameters": params, "responses": answer},
        "post": {"tags": [tag], "summary": f"${name}", "description": text,
                 "operationId": f"post{ident}", "parameters": params,
                 "requestBody": {"required": False, "content": {FHIR_JSON: {"schema": {
                     "$ref": "#/components/schemas/Resource"}}}},
                 "responses": answer},
    }  # fmt: skip


def _security(rest: dict[str, Any]) -> dict[str, Any]:
    """SMART on FHIR's OAuth endpoints, from the CapabilityStatement's oauth-uris extension."""
    security = rest.get("security") or {}
    uris: dict[str, str] = {}
    for ext in security.get("extension") or []:
        if ext.get("url", "").endswith("oauth-uris"):
            uris = {e["url"]: e.get("valueUri", "") for e in ext.get("extension") or []}
    if not uris.get("token"):
        return {}
    flows: dict[str, Any] = {"clientCredentials": {"tokenUrl": uris["token"], "scopes": {}}}
    if uris.get("authorize"):
        flows["authorizationCode"] = {
            "authorizationUrl": uris["authorize"], "tokenUrl": uris["token"], "scopes": {},
        }  # fmt: skip
    return {"smart": {"type": "oauth2", "description": "SMART App Launch / Backend Services",
                      "flows": flows}}  # fmt: skip
