"""Building searchset and history Bundles from stored bytes, without re-parsing resources."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fhir_server import fhirjson
from fhir_server.clock import now_us, to_http_date, to_instant
from fhir_server.search.query import Row
from fhir_server.store.repository import StoredResource
from fhir_server.validation import top_level_keys

_ALWAYS = ("resourceType", "id", "meta")


def bundle_bytes(
    bundle_type: str,
    entries: Iterable[bytes],
    total: int | None,
    links: list[tuple[str, str]],
) -> bytes:
    """Assemble a Bundle from pre-serialized entry fragments."""
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": to_instant(now_us())},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    prefix = fhirjson.dumps(head)[:-1]
    parts = list(entries)
    if not parts:
        return prefix + b"}"
    return prefix + b',"entry":[' + b",".join(parts) + b"]}"


def search_entry(base_url: str, row: Row, body: bytes) -> bytes:
    full_url = fhirjson.dumps(f"{base_url}/{row.res_type}/{row.res_id}")
    return (
        b'{"fullUrl":'
        + full_url
        + b',"resource":'
        + body
        + b',"search":{"mode":"'
        + row.mode.encode()
        + b'"}}'
    )


def history_entry(base_url: str, version: StoredResource) -> bytes:
    url = f"{version.res_type}/{version.res_id}"
    method = version.method or "PUT"
    entry: dict[str, Any] = {
        "fullUrl": f"{base_url}/{url}",
        "request": {"method": method, "url": url if method != "POST" else version.res_type},
        "response": {
            "status": "204" if version.deleted else ("201" if version.version_id == 1 else "200"),
            "etag": version.etag,
            "lastModified": to_instant(version.last_updated),
        },
    }
    if method == "PUT" or method == "DELETE":
        entry["request"]["url"] = url
    raw = fhirjson.dumps(entry)
    if version.body is None:
        return raw
    return raw[:-1] + b',"resource":' + version.body + b"}"


def page_links(
    base_url: str,
    path: str,
    params: list[tuple[str, str]],
    count: int,
    offset: int,
    total: int | None,
    page_len: int,
) -> list[tuple[str, str]]:
    """Absolute self/first/previous/next links; paging is by `_offset` over a stable order."""
    kept = urlencode([(k, v) for k, v in params if k not in ("_count", "_offset")])
    start = f"{base_url}/{path}?{kept}&" if kept else f"{base_url}/{path}?"

    def link(off: int) -> str:  # the parameters are encoded once for every link
        return f"{start}_count={count}&_offset={off}"

    links = [("self", link(offset)), ("first", link(0))]
    if offset > 0:
        links.append(("previous", link(max(0, offset - count))))
    has_more = (offset + page_len < total) if total is not None else page_len == count and count > 0
    if has_more:
        links.append(("next", link(offset + count)))
    return links


def shape(body: bytes, summary: str | None, elements: list[str] | None) -> bytes:
    """Apply `_elements` / `_summary` (text, data, true) to one resource body."""
    if not elements and summary in (None, "false"):
        return body
    resource = fhirjson.loads(body)
    if elements:
        keep: frozenset[str] = frozenset(elements) | frozenset(_ALWAYS)
        resource = {k: v for k, v in resource.items() if k in keep}
    elif summary == "text":
        resource = {k: v for k, v in resource.items() if k in (*_ALWAYS, "text")}
    elif summary == "data":
        resource.pop("text", None)
    elif summary == "true":
        keep = summary_elements(resource.get("resourceType", ""))
        resource = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [
        *meta.get("tag", []),
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
        },
    ]
    resource["meta"] = meta
    return fhirjson.dumps(resource)


@cache
def summary_elements(res_type: str) -> frozenset[str]:
    """Top-level elements flagged isSummary in the R4 definitions (for `_summary=true`), with
    their JSON names (`valueQuantity`, `_status`, ...)."""
    return top_level_keys(res_type, "summary") | frozenset(_ALWAYS)


def http_date(us: int) -> str:
    return to_http_date(us)
