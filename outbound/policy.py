"""One purpose's outbound rules, as the operator configured them (built by `interop`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from outbound.addresses import HostList, from_addrinfo, judge
from outbound.errors import Refused

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Policy:
    """Where requests for one purpose may go, and how long and large they may be.

    `deadline` bounds a whole exchange (connect, every redirect hop, headers and body), so a
    peer answering one byte per second costs that request only; `max_bytes` caps a response
    body, counted while it streams in. None means no bound (the operator's own PACS proxy).
    """

    purpose: str
    allow: HostList = field(default_factory=HostList)
    listed_only: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float | None = 60.0
    max_bytes: int | None = 16 * MB
    max_redirects: int = 0

    def allowing(self, *urls: str) -> Policy:
        """This policy with the hosts of `urls` allowed (a URL the operator configured)."""
        hosts = [urlsplit(u).hostname or "" for u in urls if u]
        if not any(hosts):
            return self
        return replace(self, allow=self.allow | HostList.parse(hosts))

    def check_url(self, url: str) -> None:
        """The checks that need no network: scheme and host present; raises `Refused`."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise Refused(f"{url!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise Refused(f"only http(s) URLs may be fetched, not {url!r}")
        if not parts.hostname:
            raise Refused(f"{url!r} names no host")
        if self.listed_only and not self.allow:
            raise Refused(f"no host is allowed for {self.purpose} (the allow-list is empty)")

    def check_destination(self, url: str) -> None:
        """`check_url` plus the address rules on what the host resolves to now: a check when
        a URL is registered (the connection is judged again when it is made, so a name that
        does not resolve yet is accepted here and refused then if it still does not)."""
        self.check_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        judge(host, from_addrinfo(infos), self.allow, self.listed_only)
