"""Batch and transaction Bundles (FHIR R4 §3.1.0.11): entries go back through `dispatch`.

A transaction is all-or-nothing in one database transaction, processed in the order the spec
prescribes (DELETE, POST, PUT/PATCH, GET), with `urn:uuid:` fullUrls and conditional
references resolved before anything is written. A batch runs each entry on its own.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.errors import FhirError, bad_request, precondition_failed
from fhir_server.search.registry import params_for

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
MAX_ENTRIES = 10_000
Dispatch = Callable[[Context, FhirRequest], FhirResponse]  # the router, for each entry


def process_bundle(ctx: Context, req: FhirRequest, dispatch: Dispatch) -> FhirResponse:
    bundle = _parse_json(req)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request(
            "POST to the base takes a Bundle of type batch or transaction", ["resourceType"]
        )
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(
            f"Bundle.type must be batch or transaction, not '{kind}'", ["Bundle.type"]
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad_request("Bundle.entry must be a list of entries", ["Bundle.entry"])
    if len(entries) > MAX_ENTRIES:
        raise FhirError(413, f"A Bundle may hold at most {MAX_ENTRIES} entries", "too-costly")
    _reject_duplicate_full_urls(entries)
    requests = [_entry_request(i, entry, kind == "batch") for i, entry in enumerate(entries)]
    representation = req.prefer("return") == "representation"
    if kind == "batch":
        responses = [_run_batch_entry(ctx, r, dispatch, representation) for r in requests]
        body = _response_bundle("batch-response", responses)
    else:
        responses = _run_transaction(ctx, entries, requests, dispatch, representation)
        body = _response_bundle("transaction-response", responses)
    return FhirResponse(200, body)


def apply_transaction(ctx: Context, bundle: dict[str, Any]) -> dict[str, Any]:
    """Apply a mapped transaction Bundle exactly as a POSTed one: the one write path for
    every inbound channel (HL7, Orthanc, OpenEMR, AI). Returns the transaction-response;
    a failing entry raises FhirError and nothing is written."""
    from fhir_server.api.router import dispatch

    req = FhirRequest("POST", [], [], {"content-type": "application/fhir+json"}, b"", bundle)
    resp = process_bundle(ctx, req, dispatch)
    result: dict[str, Any] = orjson.loads(resp.body or b"{}")
    return result


def _entry_request(index: int, entry: dict[str, Any], lenient: bool) -> FhirRequest | FhirError:
    """Turn Bundle.entry[i].request into a FhirRequest (or the error that entry will report)."""
    where = f"Bundle.entry[{index}]"
    request = entry.get("request")
    if not isinstance(request, dict):
        return bad_request(f"{where}.request is missing", [f"{where}.request"])
    method = request.get("method")
    url = request.get("url")
    if method not in ORDER or not isinstance(url, str) or not url:
        return bad_request(
            f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
            [f"{where}.request"],
        )
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    headers = {}
    for field, header in (
        ("ifNoneExist", "if-none-exist"),
        ("ifMatch", "if-match"),
        ("ifNoneMatch", "if-none-match"),
    ):
        if isinstance(request.get(field), str):
            headers[header] = request[field]
    resource = entry.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        return bad_request(f"{where}: a {method} entry needs a resource", [f"{where}.resource"])
    return FhirRequest(
        method, path, parse_qsl(parts.query, keep_blank_values=True), headers, b"", resource
    )


def _run_batch_entry(
    ctx: Context,
    req: FhirRequest | FhirError,
    dispatch: Dispatch,
    representation: bool,
) -> dict[str, Any]:
    if isinstance(req, FhirError):
        return _error_entry(req)
    if req.path and req.path[0] == "" or not req.path:
        return _error_entry(bad_request("A batch entry may not itself be a Bundle"))
    try:
        response = dispatch(ctx, req)
    except FhirError as exc:
        return _error_entry(exc)
    return _ok_entry(req, response, representation)


def _run_transaction(
    ctx: Context,
    entries: list[dict[str, Any]],
    requests: list[FhirRequest | FhirError],
    dispatch: Dispatch,
    representation: bool,
) -> list[dict[str, Any]]:
    for index, req in enumerate(requests):
        if isinstance(req, FhirError):
            raise req
        if not req.path:
            raise bad_request(f"Bundle.entry[{index}]: a transaction may not hold a nested Bundle")
    reqs: list[FhirRequest] = [r for r in requests if isinstance(r, FhirRequest)]
    order = sorted(range(len(reqs)), key=lambda i: ORDER[reqs[i].method])
    results: list[dict[str, Any]] = [{} for _ in reqs]
    with ctx.transaction() as tx:
        inner = dataclasses.replace(ctx, tx=tx)
        for i in order:  # deletes first: they change what conditional creates see
            if reqs[i].method != "DELETE":
                continue
            results[i] = _apply(inner, i, reqs[i], dispatch, representation)
        _assign_ids(inner, entries, reqs)
        _reject_overlaps(reqs)
        tx.prefetch(
            [
                (r.path[0], r.path[1])
                for r in reqs
                if r.method in ("PUT", "PATCH") and len(r.path) == 2
            ]
        )
        for i in order:
            if reqs[i].method == "DELETE":
                continue
            results[i] = _apply(inner, i, reqs[i], dispatch, representation)
    return results


def _apply(
    ctx: Context,
    index: int,
    req: FhirRequest,
    dispatch: Dispatch,
    representation: bool,
) -> dict[str, Any]:
    try:
        if req.method == "POST" and req.existing_id:
            if ctx.access is not None:
                ctx.access.require("c", req.path[0])
            found = ctx.tx.current(req.path[0], req.existing_id) if ctx.tx else None
            if found is None:
                raise precondition_failed("conditional create target vanished")
            response = FhirResponse(
                200,
                found[1].body,
                {"ETag": found[1].etag, "Location": f"{ctx.base_url}/{found[1].location}"},
            )
        else:
            response = dispatch(ctx, req)
    except FhirError as exc:
        exc.diagnostics = (
            f"Bundle.entry[{index}] ({req.method} {'/'.join(req.path)}): {exc.diagnostics}"
        )
        exc.expression = [f"Bundle.entry[{index}]", *exc.expression]
        raise
    return _ok_entry(req, response, representation)


def _assign_ids(ctx: Context, entries: list[dict[str, Any]], reqs: list[FhirRequest]) -> None:
    """Give every created resource its id up front and rewrite references to placeholders."""
    assert ctx.tx is not None
    mapping: dict[str, str] = {}
    by_identifier = ctx.tx.ids_by_identifier(
        [key for key in (_identifier_condition(r) for r in reqs) if key is not None]
    )

    def matches(req: FhirRequest, query: list[tuple[str, str]]) -> list[str]:
        """Conditional targets: the batched identifier lookup, else the search compiler."""
        key = _identifier_condition(req)
        if key is not None:
            return by_identifier[key]
        assert ctx.tx is not None
        return ctx.tx.search_ids(req.path[0], query)

    for index, (entry, req) in enumerate(zip(entries, reqs, strict=True)):
        full_url = entry.get("fullUrl")
        resource = req.parsed
        if req.method == "POST" and isinstance(resource, dict):
            res_type = req.path[0]
            condition = req.header("if-none-exist")
            new_id = None
            if condition:
                ids = matches(req, parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True))
                if len(ids) > 1:
                    raise precondition_failed(
                        f"Bundle.entry[{index}]: ifNoneExist matched {len(ids)} resources"
                    )
                if ids:
                    new_id = ids[0]
                    req.existing_id = new_id
            if new_id is None:
                new_id = str(uuid.uuid4())
                # create with a pre-assigned id: a PUT to a new id is the same write
                req.method = "PUT"
                req.creates = True
                req.path = [res_type, new_id]
                req.headers.pop("if-none-exist", None)
                resource["id"] = new_id
            if isinstance(full_url, str):
                mapping[full_url] = f"{res_type}/{new_id}"
        elif req.method in ("PUT", "PATCH") and len(req.path) == 1 and req.query:
            ids = matches(req, req.query)
            if len(ids) > 1:
                raise precondition_failed(
                    f"Bundle.entry[{index}]: conditional {req.method} matched {len(ids)} resources"
                )
            if ids:
                target = ids[0]
            elif req.method == "PUT":
                given = resource.get("id") if isinstance(resource, dict) else None
                target = given if isinstance(given, str) and given else str(uuid.uuid4())
            else:
                raise FhirError(
                    404, f"Bundle.entry[{index}]: conditional PATCH matched nothing", "not-found"
                )
            req.path = [req.path[0], target]
            req.query = []
            if isinstance(resource, dict) and req.method == "PUT":
                resource["id"] = target
            if isinstance(full_url, str):
                mapping[full_url] = f"{req.path[0]}/{target}"
        elif req.method == "PUT" and len(req.path) == 2 and isinstance(full_url, str):
            mapping[full_url] = "/".join(req.path)
    if mapping:
        for req in reqs:
            if isinstance(req.parsed, dict | list):
                _rewrite(req.parsed, mapping)


def _identifier_condition(req: FhirRequest) -> tuple[str, str | None, str] | None:
    """(type, system or None, value) when a conditional create or update is exactly
    `identifier=[system|]value`, the form every mapper writes; None for anything else."""
    condition = req.header("if-none-exist")
    if req.method == "POST" and condition:
        query = parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True)
    elif req.method == "PUT" and len(req.path) == 1:
        query = req.query
    else:
        return None
    if len(query) != 1 or query[0][0] != "identifier":
        return None
    value = query[0][1]
    if not value or "," in value or "\\" in value or value.count("|") > 1:
        return None
    system, bar, code = value.partition("|")
    if bar and (not system or not code):  # `|code` and `system|`: the compiler's rules
        return None
    param = params_for(req.path[0]).get("identifier")
    if param is None or param.type != "token":
        return None
    return (req.path[0], system, code) if bar else (req.path[0], None, value)


def _reject_duplicate_full_urls(entries: list[dict[str, Any]]) -> None:
    """Each entry of a batch or transaction has its own fullUrl (R4 §3.1.0.11.2 / Bundle
    bdl-7): a reference to a shared one would resolve to either entry."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if full_url is None:
            continue
        if not isinstance(full_url, str):
            raise bad_request(
                f"Bundle.entry[{index}].fullUrl must be a string", [f"Bundle.entry[{index}]"]
            )
        if full_url in seen:
            raise bad_request(
                f"Bundle.entry[{index}].fullUrl '{full_url[:200]}' is already the fullUrl of "
                f"Bundle.entry[{seen[full_url]}]; every entry needs its own",
                [f"Bundle.entry[{index}].fullUrl"],
            )
        seen[full_url] = index


def _reject_overlaps(reqs: list[FhirRequest]) -> None:
    """A transaction may not write one resource twice (R4 §3.1.0.11.2)."""
    seen: dict[str, int] = {}
    for index, req in enumerate(reqs):
        if req.method in ("GET", "HEAD") or len(req.path) != 2 or req.existing_id:
            continue
        key = "/".join(req.path)
        if key in seen:
            raise FhirError(
                409,
                f"Bundle.entry[{index}] writes {key}, "
                f"which Bundle.entry[{seen[key]}] already writes",
                "conflict",
                [f"Bundle.entry[{index}]"],
            )
        seen[key] = index


def _rewrite(node: Any, mapping: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in mapping:
            node["reference"] = mapping[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                _rewrite(value, mapping)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _rewrite(item, mapping)


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _ok_entry(req: FhirRequest, response: FhirResponse, representation: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"response": {"status": _status_line(response.status)}}
    headers = response.headers
    if "Location" in headers:
        out["response"]["location"] = headers["Location"]
    elif "Content-Location" in headers and req.method in ("PUT", "PATCH"):
        out["response"]["location"] = headers["Content-Location"]
    if "ETag" in headers:
        out["response"]["etag"] = headers["ETag"]
    if response.body and (req.method == "GET" or representation):
        resource = orjson.loads(response.body)
        out["resource"] = resource
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") not in ("Bundle", "OperationOutcome")
            and resource.get("meta", {}).get("lastUpdated")
        ):
            out["response"]["lastModified"] = resource["meta"]["lastUpdated"]
            out["fullUrl"] = f"{resource['resourceType']}/{resource.get('id')}"
    return out


def _error_entry(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status_line(exc.status), "outcome": exc.outcome()}}


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> bytes:
    return bundling.bundle_bytes(kind, (orjson.dumps(e) for e in entries), None, [])
