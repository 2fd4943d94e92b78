"""The one outbound HTTP client of the server: every request to a host a caller or operator
named ($import sources, Subscription endpoints, client JWKS, OpenEMR, the PACS) goes through it.

Rules: an allow-list of hosts per purpose; loopback, link-local, private and reserved
addresses refused unless allowed, judged on the resolved addresses at connect time;
redirects only when the purpose allows and re-checked per hop; connect and read timeouts,
an overall deadline and a response size cap; no hop-by-hop, Host or proxy headers from
callers. It imports nothing of the project, so every channel can use it.
"""

from outbound.addresses import HostList, is_public, judge
from outbound.client import AsyncClient, Client
from outbound.errors import OutboundError, Refused, TooLarge
from outbound.policy import MB, Policy
from outbound.transport import (
    AsyncGuardedTransport,
    GuardedTransport,
    clean_headers,
    deadline,
)

__all__ = [
    "MB",
    "AsyncClient",
    "AsyncGuardedTransport",
    "Client",
    "GuardedTransport",
    "HostList",
    "OutboundError",
    "Policy",
    "Refused",
    "TooLarge",
    "clean_headers",
    "deadline",
    "is_public",
    "judge",
]
