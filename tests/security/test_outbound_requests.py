"""Class 5: outbound requests the caller chooses ($import sources, Subscription endpoints, a
client's jwks_uri). One guarded client (outbound/) decides on resolved addresses, re-checks
redirects, bounds time and size, drops caller-chosen transport headers, and never lets a slow
peer hold the server. Storage-backed tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from auth_support import fresh_database_url  # noqa: F401 - a fixture
from outbound_support import Peer, SlowPeer, free_port, peers, served
from starlette.testclient import TestClient
from store_support import clear_tables

import outbound
from interop.app import create_app
from interop.outbound_policies import OutboundPolicies
from interop.settings import Settings
from outbound import HostList, Policy, is_public, judge

BASE = "http://testserver/fhir"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
PATIENT = orjson.dumps({"resourceType": "Patient", "id": "imported", "gender": "male"}) + b"\n"


# -- the address rules (table-driven, no network) -----------------------------------------------

NOT_PUBLIC = [
    "127.0.0.1", "127.255.0.9", "0.0.0.0", "10.0.0.1", "172.16.5.4", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "100.64.0.1", "192.0.0.8", "192.0.2.1", "198.18.0.1",
    "224.0.0.251", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_link_local_and_reserved_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "addresses", "allow", "listed_only", "allowed"),
    [
        ("metadata.internal", ["169.254.169.254"], "", False, False),
        ("evil.example", ["8.8.8.8", "10.0.0.1"], "", False, False),  # one private answer
        ("good.example", ["8.8.8.8"], "", False, True),
        ("good.example", ["8.8.8.8"], "", True, False),  # only listed hosts
        ("good.example", ["8.8.8.8"], "good.example", True, True),
        ("api.hospital.org", ["10.1.2.3"], "*.hospital.org", False, True),
        ("hospital.org.evil.example", ["10.1.2.3"], "*.hospital.org", False, False),
        ("pacs", ["10.1.2.3"], "10.0.0.0/8", False, True),
        ("pacs", ["10.1.2.3", "127.0.0.1"], "10.0.0.0/8", False, False),
        ("localhost", ["127.0.0.1"], "127.0.0.1", False, True),
        ("localhost", ["::1"], "127.0.0.1", False, False),
        ("anything", ["127.0.0.1"], "*", True, True),
    ],
)
def test_allow_list_opens_only_what_it_names(
    host: str, addresses: list[str], allow: str, listed_only: bool, allowed: bool
) -> None:
    parsed = [ipaddress.ip_address(a) for a in addresses]
    try:
        judge(host, parsed, HostList.from_text(allow), listed_only)
    except outbound.Refused:
        assert not allowed
    else:
        assert allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/", "http://localhost:9/", "http://[::1]:9/", "http://127.1:9/",
        "http://2130706433:9/", "http://0x7f000001:9/", "http://0177.0.0.1:9/",
        "http://[::ffff:127.0.0.1]:9/", "http://[::ffff:7f00:1]:9/", "http://169.254.169.254/",
        "http://0.0.0.0:9/", "http://10.0.0.1:9/", "file:///etc/passwd", "ftp://8.8.8.8/",
        "gopher://127.0.0.1:6379/_INFO",
    ],
)  # fmt: skip
def test_internal_addresses_in_any_spelling_are_refused_before_connecting(url: str) -> None:
    with (
        outbound.Client(Policy("test", connect_timeout=1)) as http,
        pytest.raises(httpx.HTTPError) as raised,
    ):
        http.get(url)
    assert isinstance(raised.value, (outbound.Refused, httpx.UnsupportedProtocol))


# -- the client's limits, against real local peers ------------------------------------------

LOCAL = HostList.from_text("127.0.0.1")


def test_redirect_to_a_loopback_host_is_refused_at_the_hop() -> None:
    target = Peer(host="127.0.0.2")
    start = Peer(routes={"/go": (302, {"Location": target.url("/secret")}, b"")})
    with peers(start, target), outbound.Client(Policy("t", LOCAL, max_redirects=3)) as http:
        with pytest.raises(outbound.Refused, match="127.0.0.2"):
            http.get(start.url("/go"))
        assert target.seen == []


def test_redirects_are_not_followed_when_the_purpose_allows_none() -> None:
    start = Peer(routes={"/go": (302, {"Location": "http://127.0.0.1:1/x"}, b"")})
    with peers(start), outbound.Client(Policy("t", LOCAL)) as http:
        assert http.get(start.url("/go")).status_code == 302


def test_answers_larger_than_the_cap_are_cut_off_declared_or_chunked() -> None:
    peer = Peer(
        routes={"/declared": (200, {}, b"x" * 5000), "/chunked": (200, {}, [b"y" * 1000] * 5)}
    )
    with peers(peer), outbound.Client(Policy("t", LOCAL, max_bytes=2000)) as http:
        with pytest.raises(outbound.TooLarge):
            http.get(peer.url("/declared"))
        with pytest.raises(outbound.TooLarge):
            http.get(peer.url("/chunked"))
        assert len(http.get(peer.url("/none")).content) == 0


def test_a_peer_answering_one_byte_per_second_is_cut_at_the_deadline() -> None:
    slow = SlowPeer()
    policy = Policy("t", LOCAL, read_timeout=5.0, deadline=1.5)
    with peers(slow), outbound.Client(policy) as http:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            http.get(slow.url())
        assert time.monotonic() - started < 3.0


def test_the_async_client_keeps_the_same_deadline() -> None:
    slow = SlowPeer()
    policy = Policy("t", LOCAL, read_timeout=5.0, deadline=1.5)

    async def fetch() -> None:
        async with outbound.AsyncClient(policy) as http:
            await http.get(slow.url())

    with peers(slow):
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            asyncio.run(fetch())
        assert time.monotonic() - started < 3.0


def test_caller_headers_cannot_set_host_framing_or_hop_by_hop_headers() -> None:
    peer = Peer()
    caller = {
        "Host": "evil.example", "Connection": "close, X-Keep", "Keep-Alive": "timeout=999",
        "Transfer-Encoding": "chunked", "Content-Length": "1", "Upgrade": "h2c",
        "Proxy-Authorization": "Basic eA==", "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "evil.example", "Forwarded": "for=10.0.0.1", "X-Custom": "kept",
    }  # fmt: skip
    with peers(peer), outbound.Client(Policy("t", LOCAL)) as http:
        http.post(peer.url("/hook"), content=b"body", headers=caller)
    (seen,) = peer.seen
    names = {k.lower(): v for k, v in seen.headers}
    assert names["host"] == f"127.0.0.1:{peer.port}"
    assert names["content-length"] == "4" and seen.body == b"body"
    assert names["x-custom"] == "kept"
    for dropped in ("keep-alive", "transfer-encoding", "upgrade", "proxy-authorization",
                    "x-forwarded-for", "x-forwarded-host", "forwarded"):  # fmt: skip
        assert dropped not in names
    assert names.get("connection", "keep-alive") == "keep-alive"


# -- $import sources (over HTTP, both databases) ----------------------------------------------


def _app(database_url: str, folder: Path, **settings: Any) -> Any:
    app = create_app(
        Settings(
            database_url=database_url, auth="off", base_url=BASE, bulk_dir=str(folder), **settings
        )  # fmt: skip
    )
    clear_tables(app.state.store.engine)
    return app


@pytest.fixture(scope="module")
def closed_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The defaults: no host is allow-listed for any purpose."""
    app = _app(database_url, tmp_path_factory.mktemp("closed"))
    yield app
    app.state.bulk.close()
    app.state.store.engine.dispose()


@pytest.fixture
def closed(closed_app: Any) -> Iterator[TestClient]:
    clear_tables(closed_app.state.store.engine)
    with TestClient(closed_app, base_url="http://testserver") as client:
        yield client


def _import(api: TestClient, urls: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Run $import of `urls`; the job result and the lines of its error report."""
    body = {"input": [{"type": "Patient", "url": u} for u in urls]}
    kick = api.post("/fhir/$import", json=body, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    deadline = time.monotonic() + 60
    while (done := api.get(kick.headers["Content-Location"])).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status_code == 200, done.text
    result = done.json()
    lines: list[str] = []
    for report in result["error"]:
        got = api.get(report["url"].replace(BASE, "/fhir"))
        lines += [json.loads(x)["issue"][0]["diagnostics"] for x in got.text.splitlines()]
    return result, lines


def test_import_from_loopback_metadata_and_private_hosts_is_refused(
    closed: TestClient,
) -> None:
    peer = Peer(routes={"/p.ndjson": (200, {}, PATIENT)})
    urls = [
        peer.url("/p.ndjson"), f"http://localhost:{peer.port}/p.ndjson",
        f"http://[::1]:{peer.port}/p.ndjson", "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/p.ndjson", f"http://2130706433:{peer.port}/p.ndjson",
    ]  # fmt: skip
    with peers(peer):
        result, lines = _import(closed, urls)
    assert peer.seen == []  # not one request reached the local peer
    assert [o["count"] for o in result["output"]] == [0] * len(urls)
    assert len(lines) == len(urls)
    for line in lines:
        assert "was not fetched" in line and "allow-list" in line
    assert closed.get("/fhir/Patient/imported").status_code == 404


def test_import_from_an_allowed_host_redirecting_to_loopback_is_refused(
    closed: TestClient, closed_app: Any
) -> None:
    jobs = closed_app.state.bulk.jobs
    original = jobs.config
    opened = OutboundPolicies.from_settings(Settings(outbound_allow_import="127.0.0.1")).import_
    jobs.config = dataclasses.replace(original, sources=opened)
    inner = Peer(host="127.0.0.2", routes={"/p.ndjson": (200, {}, PATIENT)})
    start = Peer(routes={"/go": (302, {"Location": inner.url("/p.ndjson")}, b""),
                         "/p.ndjson": (200, {}, PATIENT)})  # fmt: skip
    try:
        with peers(start, inner):
            result, lines = _import(closed, [start.url("/go")])
            assert inner.seen == [] and len(start.seen) == 1
            (line,) = lines
            assert "127.0.0.2" in line and "was not fetched" in line
            # the allow-listed host itself is fine
            result, lines = _import(closed, [start.url("/p.ndjson")])
            assert lines == [] and result["output"][0]["count"] == 1
    finally:
        jobs.config = original


def test_import_source_beyond_the_size_cap_is_cut_off(closed: TestClient, closed_app: Any) -> None:
    jobs = closed_app.state.bulk.jobs
    original = jobs.config
    small = Policy("$import", LOCAL, max_bytes=len(PATIENT) * 3)
    jobs.config = dataclasses.replace(original, sources=small)
    peer = Peer(routes={"/big.ndjson": (200, {}, [PATIENT] * 50)})
    try:
        with peers(peer):
            _, lines = _import(closed, [peer.url("/big.ndjson")])
        assert any("exceeded" in line for line in lines), lines
    finally:
        jobs.config = original


# -- Subscription endpoints ---------------------------------------------------------------------


def _subscription(endpoint: str, headers: list[str] | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if headers:
        channel["header"] = headers
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": "Observation?status=final",
        "channel": channel,
    }


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook",
        "http://192.168.0.10/hook", "http://[::ffff:127.0.0.1]:9/hook",
    ],
)  # fmt: skip
def test_subscription_to_an_internal_endpoint_is_refused_when_written(
    closed: TestClient, endpoint: str
) -> None:
    response = closed.post("/fhir/Subscription", json=_subscription(endpoint))
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "channel.endpoint is refused" in outcome["issue"][0]["diagnostics"]
    assert closed.get("/fhir/Subscription").json().get("total", 0) == 0


def test_subscription_delivery_does_not_forward_host_connection_or_forwarded_headers(
    fresh_database_url: str,  # noqa: F811 - its own: no other app's delivery may take the job
    tmp_path: Path,
) -> None:
    app = _app(fresh_database_url, tmp_path, outbound_allow_subscriptions="127.0.0.1")
    receiver = Peer()
    headers = [
        "Host: evil.example", "Connection: close", "X-Forwarded-For: 10.9.8.7",
        "X-Forwarded-Host: evil.example", "Forwarded: for=10.9.8.7", "Content-Length: 0",
        "Transfer-Encoding: chunked", "Proxy-Authorization: Basic eA==", "Upgrade: websocket",
        "Authorization: Bearer for-the-receiver",
    ]  # fmt: skip
    try:
        with peers(receiver), TestClient(app, base_url="http://testserver") as api:
            body = _subscription(receiver.url("/h"), headers)
            created = api.post("/fhir/Subscription", json=body)
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 15
            while not receiver.seen:
                assert time.monotonic() < deadline, "no handshake arrived"
                time.sleep(0.05)
            got = {k.lower(): v for k, v in receiver.seen[0].headers}
            assert got["host"] == f"127.0.0.1:{receiver.port}"
            assert got["authorization"] == "Bearer for-the-receiver"
            for name in ("x-forwarded-for", "x-forwarded-host", "forwarded", "upgrade",
                         "transfer-encoding", "proxy-authorization"):  # fmt: skip
                assert name not in got, name
            assert got.get("connection", "keep-alive") == "keep-alive"
    finally:
        app.state.bulk.close()
        app.state.store.engine.dispose()


# -- client jwks_uri ---------------------------------------------------------------------------


def test_registering_a_jwks_uri_on_an_internal_address_is_refused(closed: TestClient) -> None:
    for uri in ("http://169.254.169.254/jwks", "http://127.0.0.1:9/jwks", "http://[::1]/jwks"):
        response = closed.post(
            "/auth/register",
            json={
                "client_name": "probe",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": uri,
                "redirect_uris": ["https://app.example/cb"],
                "scope": "patient/*.rs",
            },
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_client_metadata"
        # self-registered apps may not name keys at all (operators register them); the
        # address rule is applied again whenever an operator-registered jwks_uri is fetched


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _assertion(client_id: str, token_url: str, n: int) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": int(time.time()) + 60,
              "jti": f"j{n}"}  # fmt: skip
    return f"{_b64({'alg': 'RS384', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"


def test_slow_jwks_uri_does_not_stall_the_server(database_url: str, tmp_path: Path) -> None:
    """Ten token requests whose client's jwks_uri answers one byte per second: metadata and a
    FHIR read still answer at once, and each token request ends at the JWKS deadline."""
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    app = create_app(
        Settings(
            database_url=database_url,
            auth="on",
            base_url=f"{root}/fhir",
            bulk_dir=str(tmp_path),
            outbound_allow_jwks="127.0.0.1",
        )  # fmt: skip
    )
    clear_tables(app.state.store.engine, frozenset({"auth_signing_keys"}))
    slow = SlowPeer()
    registry = app.state.auth.registry
    backend, secret = registry.add_client(
        name="Warehouse", client_type="confidential-secret", redirect_uris=[],
        scope="system/*.cruds",
    )  # fmt: skip
    victim, _ = registry.add_client(
        name="Slow JWKS", client_type="confidential-jwks", redirect_uris=[],
        scope="system/*.rs", jwks_url=slow.url("/jwks"),
    )  # fmt: skip
    token_url = app.state.auth.config.token_url
    try:
        with peers(slow), served(app, port), httpx.Client(base_url=root, timeout=30) as http:
            token = http.post(
                "/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                auth=(backend.client_id, secret),
            ).json()["access_token"]  # fmt: skip
            bearer = {"Authorization": f"Bearer {token}"}
            put = http.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"},
                           headers=bearer)  # fmt: skip
            assert put.status_code in (200, 201), put.text

            def token_request(n: int) -> tuple[int, float]:
                started = time.monotonic()
                form = {
                    "grant_type": "client_credentials", "scope": "system/*.rs",
                    "client_assertion_type":
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": _assertion(victim.client_id, token_url, n),
                }  # fmt: skip
                with httpx.Client(base_url=root, timeout=60) as own:
                    answer = own.post("/auth/token", data=form)
                return answer.status_code, time.monotonic() - started

            with ThreadPoolExecutor(10) as pool:
                pending = [pool.submit(token_request, n) for n in range(10)]
                time.sleep(1.0)  # the ten are now waiting on the slow peer
                for _ in range(3):
                    for path, headers in (("/fhir/metadata", {}), ("/fhir/Patient/p1", bearer)):
                        started = time.monotonic()
                        answer = http.get(path, headers=headers, timeout=5)
                        assert answer.status_code == 200, (path, answer.text)
                        # a stall lasts the 5 s JWKS deadline; 2.5 s leaves room for a busy CI
                        assert time.monotonic() - started < 2.5, path
                    assert not all(p.done() for p in pending)  # still stalled meanwhile
                    time.sleep(0.3)
                results = [p.result(timeout=60) for p in pending]
            assert all(status == 401 for status, _ in results), results
            assert all(seconds < 10 for _, seconds in results), results
            assert slow.connections == 1  # one fetch shared by the ten, not ten threads
    finally:
        app.state.store.engine.dispose()
