"""The httpx transports every outbound request goes through.

The check sits where the connection is made: the host is resolved once, every address is
judged (`outbound.addresses.judge`), and the socket is opened to a judged address, while TLS
still verifies and sends SNI for the name in the URL. So a redirect hop, a DNS answer that
changes between a check and the connect (rebinding) or a pooled client reused for another
host cannot reach anything the rules refuse. Every socket read and write is bounded by the
request's overall deadline (a context variable), and the answer's body is counted as it
streams in.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import httpcore
import httpx

from outbound.addresses import from_addrinfo, judge
from outbound.errors import Refused, TooLarge
from outbound.policy import Policy

_deadline: ContextVar[float | None] = ContextVar("outbound_deadline", default=None)

# Never taken from a caller: hop-by-hop headers (RFC 9110 §7.6.1), the target (Host, set
# from the URL) and headers that would speak for a proxy in front of the peer.
DROPPED = frozenset(
    {"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
     "proxy-authenticate", "proxy-connection", "host", "forwarded", "x-real-ip"}
)  # fmt: skip
FRAMING = frozenset({"content-length", "transfer-encoding"})


def is_dropped(name: str) -> bool:
    lower = name.lower()
    return lower in DROPPED or lower.startswith(("proxy-", "x-forwarded-"))


def clean_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A caller's headers without hop-by-hop, Host, proxy or framing headers (the client
    computes Host, Content-Length and Transfer-Encoding from the URL and the body)."""
    return {
        k: v for k, v in headers if not is_dropped(k) and k.lower() not in FRAMING and
        "\r" not in k + v and "\n" not in k + v
    }  # fmt: skip


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Everything inside ends within `seconds` (an enclosing, earlier deadline stays)."""
    current = _deadline.get()
    end = None if seconds is None else time.monotonic() + seconds
    if end is None or (current is not None and current <= end):
        yield
        return
    token = _deadline.set(end)
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the overall deadline of this outbound request passed")
    return left if timeout is None else min(timeout, left)


def _prepare(policy: Policy, request: httpx.Request) -> None:
    """The checks before any byte is sent, for every hop: scheme, host, headers."""
    policy.check_url(str(request.url))
    for name in list(request.headers.keys()):
        if is_dropped(name):
            del request.headers[name]
    request.headers["Host"] = request.url.netloc.decode("ascii")
    try:
        body = request.content
    except httpx.RequestNotRead:
        return  # streamed: httpx set the framing, h11 enforces it
    request.headers.pop("Transfer-Encoding", None)
    if body or request.method in ("POST", "PUT", "PATCH"):
        request.headers["Content-Length"] = str(len(body))
    else:
        request.headers.pop("Content-Length", None)


def _check_length(policy: Policy, response: httpx.Response) -> None:
    declared = response.headers.get("content-length", "")
    if policy.max_bytes is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise TooLarge(f"the answer is {declared} bytes; at most {policy.max_bytes} are accepted")


def _too_large(policy: Policy) -> TooLarge:
    return TooLarge(f"the answer exceeded {policy.max_bytes} bytes and was cut off")


# -- synchronous --------------------------------------------------------------------------------


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None,
                    ) -> httpcore.NetworkStream:  # fmt: skip
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} could not be resolved ({exc})") from None
        addresses = from_addrinfo(infos)
        judge(host, addresses, self.policy.allow, self.policy.listed_only)
        last: Exception = httpcore.ConnectError(f"{host} could not be reached")
        for address in addresses:
            try:
                bounded = _bounded(timeout, httpcore.ConnectTimeout)
                stream = self.inner.connect_tcp(str(address), port, bounded, local_address,
                                                socket_options)  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _Stream(stream)
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        raise Refused("unix sockets are not an outbound destination")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Body(httpx.SyncByteStream):
    """The answer's body, under the request's deadline and the size cap."""

    def __init__(self, inner: httpx.SyncByteStream, end: float | None, policy: Policy) -> None:
        self.inner, self.end, self.policy = inner, end, policy

    def __iter__(self) -> Iterator[bytes]:
        chunks, seen = iter(self.inner), 0
        while True:
            token = _deadline.set(self.end)
            try:
                chunk = next(chunks, None)
            finally:
                _deadline.reset(token)
            if chunk is None:
                return
            seen += len(chunk)
            if self.policy.max_bytes is not None and seen > self.policy.max_bytes:
                raise _too_large(self.policy)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class GuardedTransport(httpx.HTTPTransport):
    """A synchronous transport that applies `policy` to every request and connection."""

    def __init__(self, policy: Policy, verify: Any = True,
                 limits: httpx.Limits | None = None) -> None:  # fmt: skip
        limits = limits or httpx.Limits(max_connections=32, max_keepalive_connections=8)
        super().__init__(verify=verify, trust_env=False, limits=limits)
        self.policy = policy
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(policy),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _prepare(self.policy, request)
        end = _deadline.get()
        if end is None and self.policy.deadline is not None:
            end = time.monotonic() + self.policy.deadline
        token = _deadline.set(end)
        try:
            response = super().handle_request(request)
        finally:
            _deadline.reset(token)
        try:
            _check_length(self.policy, response)
        except TooLarge:
            response.close()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Body(response.stream, end, self.policy),
                              extensions=response.extensions)  # fmt: skip


# -- asynchronous (never blocks the event loop) ----------------------------------------------


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # fmt: skip
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _AsyncStream(await self.inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None,
                          ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        try:
            with anyio.fail_after(_bounded(timeout, httpcore.ConnectTimeout)):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"{host} could not be resolved in time") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} could not be resolved ({exc})") from None
        addresses = from_addrinfo(infos)
        judge(host, addresses, self.policy.allow, self.policy.listed_only)
        last: Exception = httpcore.ConnectError(f"{host} could not be reached")
        for address in addresses:
            try:
                bounded = _bounded(timeout, httpcore.ConnectTimeout)
                stream = await self.inner.connect_tcp(str(address), port, bounded,
                                                      local_address, socket_options)  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _AsyncStream(stream)
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, end: float | None, policy: Policy) -> None:
        self.inner, self.end, self.policy = inner, end, policy

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks, seen = aiter(self.inner), 0
        while True:
            token = _deadline.set(self.end)
            try:
                chunk = await anext(chunks, None)
            finally:
                _deadline.reset(token)
            if chunk is None:
                return
            seen += len(chunk)
            if self.policy.max_bytes is not None and seen > self.policy.max_bytes:
                raise _too_large(self.policy)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """The asynchronous twin of `GuardedTransport` (DNS and sockets on the event loop)."""

    def __init__(self, policy: Policy, verify: Any = True,
                 limits: httpx.Limits | None = None) -> None:  # fmt: skip
        limits = limits or httpx.Limits(max_connections=32, max_keepalive_connections=8)
        super().__init__(verify=verify, trust_env=False, limits=limits)
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(  # type: ignore[assignment]
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_AsyncBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _prepare(self.policy, request)
        end = _deadline.get()
        if end is None and self.policy.deadline is not None:
            end = time.monotonic() + self.policy.deadline
        token = _deadline.set(end)
        try:
            response = await super().handle_async_request(request)
        finally:
            _deadline.reset(token)
        try:
            _check_length(self.policy, response)
        except TooLarge:
            await response.aclose()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_AsyncBody(response.stream, end, self.policy),
                              extensions=response.extensions)  # fmt: skip
