"""What the outbound client raises; httpx errors, so a caller's `except httpx.HTTPError` holds."""

from __future__ import annotations

import httpx


class OutboundError(httpx.TransportError):
    """An outbound request this server refused to send or cut short."""


class Refused(OutboundError):
    """The host, address or scheme is not allowed for this purpose."""


class TooLarge(OutboundError):
    """The answer is larger than this purpose allows."""
