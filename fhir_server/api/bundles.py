"""Batch and transaction Bundles over REST (FHIR R4 §3.1.0.11): a thin adapter.

A transaction goes to the store's one write path (`Store.apply`), which applies it all or
nothing in FHIR order and returns typed results; this module only turns the HTTP Bundle into
that call and the results into the transaction-response (its GET entries come back here to be
dispatched inside the transaction). A batch runs each entry through `dispatch` on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server import fhirjson
from fhir_server.api import bundling
from fhir_server.api.context import Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.clock import to_instant
from fhir_server.errors import FhirError, bad_request
from fhir_server.store.apply import ORDER, EntryResult, entry_list
from fhir_server.store.repository import Transaction

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
    entries = entry_list(bundle)
    representation = req.prefer("return") == "representation"
    if kind == "batch":
        requests = [_entry_request(i, entry) for i, entry in enumerate(entries)]
        responses = [_run_batch_entry(ctx, r, dispatch, representation) for r in requests]
        body = _response_bundle("batch-response", responses)
    else:
        responses = _run_transaction(ctx, bundle, entries, dispatch, representation)
        body = _response_bundle("transaction-response", responses)
    return FhirResponse(200, body)


def apply_transaction(ctx: Context, bundle: dict[str, Any]) -> dict[str, Any]:
    """A transaction Bundle applied with `ctx`'s policy and agent, answered as the REST
    transaction-response (tests and scripts; channels call `Store.apply` for typed results).
    A failing entry raises FhirError and nothing is written."""
    results = ctx.store.apply(bundle, ctx.actor, ctx.access, None, None, "transaction")
    entries = [_result_entry(ctx.base_url, r, False) for r in results]
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}


def _entry_request(index: int, entry: dict[str, Any]) -> FhirRequest | FhirError:
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
    return _ok_entry(req.method, response, representation)


def _run_transaction(
    ctx: Context,
    bundle: dict[str, Any],
    entries: list[dict[str, Any]],
    dispatch: Dispatch,
    representation: bool,
) -> list[dict[str, Any]]:
    """The store applies the transaction; reads (GET entries) come back here for dispatch."""
    hooks = ctx.operations.hooks  # e.g. a Subscription write is vetted before it is applied
    if hooks:
        for i, entry in enumerate(entries):
            request = _entry_request(i, entry)
            if isinstance(request, FhirRequest) and request.path:
                for hook in hooks.get(request.path[0], ()):
                    hook.before_write(ctx, request)

    def read(tx: Transaction, index: int) -> FhirResponse:
        request = _entry_request(index, entries[index])
        assert isinstance(request, FhirRequest)
        try:
            return dispatch(dataclasses.replace(ctx, tx=tx), request)
        except FhirError as exc:
            exc.diagnostics = (
                f"Bundle.entry[{index}] (GET {'/'.join(request.path)}): {exc.diagnostics}"
            )
            exc.expression = [f"Bundle.entry[{index}]", *exc.expression]
            raise

    def before_commit(tx: Transaction, results: list[EntryResult]) -> None:
        inner = dataclasses.replace(ctx, tx=tx)
        for result in results:
            if result.stored is not None and result.res_type in hooks:
                location = f"{ctx.base_url}/{result.stored.location}"
                response = FhirResponse(result.status, None, {"Location": location})
                for hook in hooks[result.res_type]:
                    hook.after_write(inner, response)
        if ctx.before_commit is not None and tx.changes:
            ctx.before_commit(tx)

    # the Bundle is this request's parsed body, checked against the document limits as a
    # whole (`_parse_json`); nothing reads its resources afterwards
    results = ctx.store.apply(
        bundle, ctx.actor, ctx.access, read, before_commit, "transaction", owned=True, checked=True
    )
    return [_result_entry(ctx.base_url, r, representation) for r in results]


def _result_entry(base_url: str, result: EntryResult, representation: bool) -> dict[str, Any]:
    """A transaction-response entry from the store's typed result."""
    if result.outcome == "read":
        response: FhirResponse = result.response
        return _ok_entry("GET", response, representation)
    stored = result.stored
    out: dict[str, Any] = {"response": {"status": _status_line(result.status)}}
    if stored is None:
        return out
    if not stored.deleted:
        out["response"]["location"] = f"{base_url}/{stored.location}"
    out["response"]["etag"] = stored.etag
    if representation and stored.body:
        out["resource"] = fhirjson.loads(stored.body)
        out["response"]["lastModified"] = to_instant(stored.last_updated)
        out["fullUrl"] = f"{stored.res_type}/{stored.res_id}"
    return out


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _ok_entry(method: str, response: FhirResponse, representation: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"response": {"status": _status_line(response.status)}}
    headers = response.headers
    if "Location" in headers:
        out["response"]["location"] = headers["Location"]
    elif "Content-Location" in headers and method in ("PUT", "PATCH"):
        out["response"]["location"] = headers["Content-Location"]
    if "ETag" in headers:
        out["response"]["etag"] = headers["ETag"]
    if response.body and (method == "GET" or representation):
        resource = fhirjson.loads(response.body)
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
    return bundling.bundle_bytes(kind, (fhirjson.dumps(e) for e in entries), None, [])
