"""The secured DICOMweb proxy: QIDO-RS, WADO-RS and STOW-RS forwarded to the PACS, streaming.

Bodies flow through chunk by chunk in both directions (a 2 GB study never sits in memory);
Content-Type (with its multipart boundary), Accept (with the transfer-syntax asked for) and
ranges pass unchanged. Only DICOM JSON answers are read, to filter QIDO-RS results for
confined callers and to replace the PACS's own URLs (RetrieveURL, BulkDataURI) with ours.
The PACS credentials stay in the upstream client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson
from httpcore._async.http11 import AsyncHTTP11Connection
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

import outbound
from dicomweb_bridge.access import Caller
from dicomweb_bridge.pacs import DICOM_JSON, PacsConfig
from dicomweb_bridge.request import DicomwebRequest

log = logging.getLogger("interop.imaging")
# What a caller's request may tell the PACS: what it accepts, which bytes, whether it has
# them already, and (STOW-RS) what its body is. Never Host, hop-by-hop headers, cookies or
# credentials: the PACS credentials are the upstream client's own.
REQUEST_HEADERS = ("accept", "accept-charset", "accept-encoding", "range", "if-none-match",
                   "if-modified-since")  # fmt: skip
BODY_HEADERS = ("content-type", "content-length")
RESPONSE_HEADERS = ("content-type", "content-length", "content-encoding", "content-range",
                    "accept-ranges", "etag", "last-modified", "content-location")  # fmt: skip
STUDY_UID = "0020000D"
CHUNK = 1 << 20
# A relay's cost is per chunk, not per byte: httpcore reads 64 KiB at a time, which made
# this process spend ~4.5 ms of CPU per MB relayed; 1 MiB reads bring that to ~2.8 ms
# (bench/imaging_bench.py). A class attribute, so it applies to every httpx async client
# in the process; a larger recv() buffer changes nothing else.
AsyncHTTP11Connection.READ_NUM_BYTES = CHUNK


class Upstream:
    """One pooled async client to the PACS's DICOMweb root."""

    def __init__(self, config: PacsConfig, public_root: str) -> None:
        self.auth = httpx.BasicAuth(config.user, config.password) if config.user else None
        self.root = config.dicomweb_url
        self.policy = config.policy()  # the upstream goes through the outbound client
        self.public_root = public_root
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client of the running event loop (pooled connections belong to one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = outbound.AsyncClient(
                self.policy, auth=self.auth, timeout=httpx.Timeout(60.0, read=600.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )  # fmt: skip
            self._loop = loop
        return self._client

    def url(self, parsed: DicomwebRequest) -> str:
        """Under the DICOMweb root, from the parsed parts only (never a caller's raw path)."""
        return f"{self.root}/{parsed.path}"

    async def open(self, request: Request, parsed: DicomwebRequest) -> httpx.Response:
        """The one upstream call of the proxy: method, path and query come from `parsed`;
        of the caller's headers only the allow-listed ones pass."""
        # bodies pass through raw, so the PACS may only compress what our client accepts
        headers = {"accept-encoding": "identity"}
        allowed = REQUEST_HEADERS + (BODY_HEADERS if parsed.method == "POST" else ())
        headers.update((k, v) for k, v in request.headers.items() if k in allowed)
        body = request.stream() if parsed.method == "POST" else None
        upstream = self.client.build_request(
            parsed.method, self.url(parsed), params=parsed.upstream_params,
            headers=headers, content=body,
        )  # fmt: skip
        try:
            return await self.client.send(upstream, stream=True)
        except httpx.RemoteProtocolError:
            if body is not None:  # a streamed body cannot be sent twice
                raise
            # a pooled connection the PACS closed as we reused it (Orthanc's keep-alive is 1 s)
            return await self.client.send(upstream, stream=True)

    def rewrite(self, raw: bytes) -> bytes:
        """Point the PACS's URLs at the proxy (the client never learns the PACS address)."""
        return raw.replace(self.root.encode(), self.public_root.encode())


def passthrough(resp: httpx.Response) -> Response:
    headers = {k: v for k, v in resp.headers.items() if k in RESPONSE_HEADERS}
    return StreamingResponse(resp.aiter_raw(CHUNK), resp.status_code, headers,
                             background=BackgroundTask(resp.aclose))  # fmt: skip


async def json_body(resp: httpx.Response) -> Any:
    try:
        raw = await resp.aread()
    finally:
        await resp.aclose()
    return orjson.loads(raw) if raw.strip() else []


def filter_results(data: Any, visible: set[str]) -> list[Any]:
    """QIDO-RS results whose study the caller may see (no StudyInstanceUID: dropped)."""
    if not isinstance(data, list):
        return []
    kept = []
    for item in data:
        values = item.get(STUDY_UID, {}).get("Value", []) if isinstance(item, dict) else []
        if values and str(values[0]) in visible:
            kept.append(item)
    return kept


def study_uids(data: Any) -> list[str]:
    out = []
    for item in data if isinstance(data, list) else []:
        values = item.get(STUDY_UID, {}).get("Value", []) if isinstance(item, dict) else []
        if values:
            out.append(str(values[0]))
    return out


async def forward_read(
    upstream: Upstream, caller: Caller, request: Request, parsed: DicomwebRequest
) -> Response:
    """GET/HEAD: QIDO-RS (perm s) or WADO-RS (perm r); a confined caller reaches a study only
    when it may see its ImagingStudy, and its searches return only such studies."""
    qido = parsed.search is not None
    perm = "s" if qido else "r"
    limited = caller.limited(perm)
    if limited and parsed.study is not None:  # a database search: off the event loop
        await run_in_threadpool(caller.require_study, perm, parsed.study)
    resp = await upstream.open(request, parsed)
    is_json = resp.headers.get("content-type", "").startswith((DICOM_JSON, "application/json"))
    if not is_json or resp.status_code >= 400:
        return passthrough(resp)
    data = await json_body(resp)
    if limited:  # results (and metadata) only of the studies the caller may see
        allowed = {parsed.study} if parsed.study else None
        if allowed is None:
            allowed = await run_in_threadpool(caller.visible, study_uids(data))
        data = filter_results(data, allowed) if qido or parsed.view == "metadata" else data
    body = upstream.rewrite(orjson.dumps(data))
    return Response(body, resp.status_code, media_type=resp.headers["content-type"])
