"""The outbound HTTP clients: httpx clients on a guarded transport, one per purpose.

Redirects are followed only when the purpose allows (`max_redirects`), and then every hop
passes the same transport checks; the purpose's deadline covers all hops and the body.
"""

from __future__ import annotations

from typing import Any

import httpx

from outbound.errors import Refused
from outbound.policy import Policy
from outbound.transport import AsyncGuardedTransport, GuardedTransport, deadline


def _timeout(policy: Policy) -> httpx.Timeout:
    return httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)


def _options(policy: Policy, auth: Any, timeout: httpx.Timeout | None) -> dict[str, Any]:
    """What both clients pass httpx: redirects and deadlines from the purpose, no proxies."""
    return {
        "auth": auth,
        "timeout": timeout or _timeout(policy),
        "follow_redirects": policy.max_redirects > 0,
        "max_redirects": policy.max_redirects,
        "trust_env": False,
    }


def _build(build: Any, method: str, url: Any, **kwargs: Any) -> httpx.Request:
    """A URL httpx cannot parse (`0177.0.0.1`, bad ports) is refused like any other."""
    try:
        request: httpx.Request = build(method, url, **kwargs)
    except httpx.InvalidURL as exc:
        raise Refused(f"{str(url)!r} is not a valid URL ({exc})") from None
    return request


class Client(httpx.Client):
    """A synchronous client that sends only what `policy` allows."""

    def __init__(self, policy: Policy, *, verify: Any = True, auth: Any = None,
                 limits: httpx.Limits | None = None,
                 timeout: httpx.Timeout | None = None) -> None:  # fmt: skip
        super().__init__(
            transport=GuardedTransport(policy, verify, limits),
            **_options(policy, auth, timeout),
        )
        self.policy = policy

    def build_request(self, method: str, url: Any, **kwargs: Any) -> httpx.Request:
        return _build(super().build_request, method, url, **kwargs)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        kwargs["follow_redirects"] = self.policy.max_redirects > 0
        with deadline(self.policy.deadline):
            return super().send(request, **kwargs)


class AsyncClient(httpx.AsyncClient):
    """An asynchronous client that sends only what `policy` allows."""

    def __init__(self, policy: Policy, *, verify: Any = True, auth: Any = None,
                 limits: httpx.Limits | None = None,
                 timeout: httpx.Timeout | None = None) -> None:  # fmt: skip
        super().__init__(
            transport=AsyncGuardedTransport(policy, verify, limits),
            **_options(policy, auth, timeout),
        )
        self.policy = policy

    def build_request(self, method: str, url: Any, **kwargs: Any) -> httpx.Request:
        return _build(super().build_request, method, url, **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        kwargs["follow_redirects"] = self.policy.max_redirects > 0
        with deadline(self.policy.deadline):
            return await super().send(request, **kwargs)
