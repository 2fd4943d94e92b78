"""A `requests` transport adapter onto the outbound client, for libraries that insist on a
`requests.Session` (dicomweb-client): mount it and every request obeys the same policy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from outbound.client import Client
from outbound.policy import Policy


class _Raw(io.RawIOBase):
    """The streamed body as the file object `requests.Response.raw` expects."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks = response.iter_bytes()
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        try:
            while not self.buffer:
                chunk = next(self.chunks, None)
                if chunk is None:
                    return 0
                self.buffer = chunk
        except httpx.HTTPError as exc:
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size

    def close(self) -> None:
        self.response.close()
        super().close()


class OutboundAdapter(BaseAdapter):
    def __init__(self, policy: Policy, verify: Any = True) -> None:
        super().__init__()
        self.http = Client(policy, verify=verify)

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:  # fmt: skip
        outgoing = self.http.build_request(
            request.method or "GET", request.url or "", headers=list(_text(request.headers)),
            content=request.body,  # type: ignore[arg-type]
        )  # fmt: skip
        try:
            response = self.http.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            raise requests.Timeout(f"{type(exc).__name__}: {exc}", request=request) from exc
        except httpx.HTTPError as exc:
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}", request=request) from exc
        out = requests.Response()
        out.status_code = response.status_code
        out.headers = CaseInsensitiveDict(response.headers)
        out.encoding = get_encoding_from_headers(out.headers)
        out.reason = response.reason_phrase
        out.url = request.url or ""
        out.request = request
        out.raw = _Raw(response)
        if not stream:
            out.content  # noqa: B018 - read now, as requests does without stream=True
        return out

    def close(self) -> None:
        self.http.close()


def session(policy: Policy, auth: tuple[str, str] | None = None) -> requests.Session:
    """A `requests.Session` whose every request goes through the outbound client."""
    out = requests.Session()
    out.trust_env = False
    out.auth = auth
    adapter = OutboundAdapter(policy)
    out.mount("http://", adapter)
    out.mount("https://", adapter)
    return out


def _text(headers: Any) -> Iterator[tuple[str, str]]:
    for name, value in headers.items():
        yield (name, value.decode("latin-1") if isinstance(value, bytes) else value)
