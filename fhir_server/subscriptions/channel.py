"""What a Subscription asks for, checked when it is written (bad ones are a 400 then, not a
silent failure later): criteria a search this server can run, a channel it can deliver on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, bad_request
from fhir_server.search.query import Compiler
from fhir_server.search.registry import resource_types

CHANNELS = ("rest-hook", "websocket")
PAYLOADS = ("", "application/fhir+json", "application/json")


@dataclass(frozen=True, slots=True)
class Spec:
    sub_id: str
    status: str
    res_type: str
    query: tuple[tuple[str, str], ...]
    channel: str
    endpoint: str
    payload: str
    headers: tuple[tuple[str, str], ...]
    since: int = 0  # UTC epoch microseconds: only changes committed from then on notify


def parse(resource: dict[str, Any], base_url: str) -> Spec:
    """The subscription's spec; FhirError 400 when it asks for something we cannot do."""
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise bad_request("Subscription.criteria must be a search such as Observation?code=...")
    res_type, _, search = criteria.strip().partition("?")
    if res_type not in resource_types():
        raise bad_request(
            f"Subscription.criteria must start with a resource type, not '{res_type}'",
            ["Subscription.criteria"],
        )
    query = tuple(parse_qsl(search, keep_blank_values=True))
    try:
        Compiler(base_url, strict=True).compile(res_type, list(query))
    except FhirError as exc:
        raise bad_request(
            f"Subscription.criteria: {exc.diagnostics}", ["Subscription.criteria"]
        ) from None
    channel = resource.get("channel") if isinstance(resource.get("channel"), dict) else {}
    assert isinstance(channel, dict)
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise FhirError(
            400,
            f"Subscription.channel.type '{kind}' is not supported; use rest-hook or websocket",
            "not-supported",
            ["Subscription.channel.type"],
        )
    endpoint = channel.get("endpoint") or ""
    if kind == "rest-hook" and not str(endpoint).startswith(("http://", "https://")):
        raise bad_request(
            "A rest-hook Subscription needs an http(s) channel.endpoint",
            ["Subscription.channel.endpoint"],
        )
    payload = channel.get("payload") or ""
    if payload not in PAYLOADS:
        raise FhirError(
            400,
            f"Subscription.channel.payload '{payload}' is not supported; leave it empty or "
            "use application/fhir+json",
            "not-supported",
            ["Subscription.channel.payload"],
        )
    headers = []
    for header in channel.get("header") or []:
        name, sep, value = str(header).partition(":")
        if not sep or not name.strip() or "\n" in header or "\r" in header:
            raise bad_request(
                f"Subscription.channel.header '{header}' must look like 'Name: value'",
                ["Subscription.channel.header"],
            )
        headers.append((name.strip(), value.strip()))
    return Spec(
        str(resource.get("id") or ""),
        str(resource.get("status") or ""),
        res_type,
        query,
        kind,
        str(endpoint),
        payload,
        tuple(headers),
    )
