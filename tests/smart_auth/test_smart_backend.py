"""Backend services (client_credentials + private_key_jwt), introspection, registration."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.testclient import TestClient

TOKEN_URL = "http://testserver/auth/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assertion(client_id: str, key: Any, alg: str = "ES384", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, [alg])


def token_request(http: TestClient, signed: str, scope: str = "system/*.rs") -> Any:
    return http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION,
            "client_assertion": signed,
        },
    )


@pytest.fixture
def ec_client(smart) -> tuple[str, ECKey]:  # type: ignore[no-untyped-def]
    key = ECKey.generate_key("P-384", parameters={"kid": "ec-1"})
    client_id, _ = smart.client(
        "system/*.rs", "confidential-jwks", jwks={"keys": [key.as_dict(private=False)]}
    )
    return client_id, key


def test_backend_token_with_es384(http: TestClient, ec_client) -> None:  # type: ignore[no-untyped-def]
    client_id, key = ec_client
    response = token_request(http, assertion(client_id, key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] <= 300 and "refresh_token" not in body
    assert body["scope"] == "system/*.rs"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get("/fhir/Patient", headers=auth).status_code == 200


def test_replayed_jti_is_refused(http: TestClient, ec_client) -> None:  # type: ignore[no-untyped-def]
    client_id, key = ec_client
    signed = assertion(client_id, key)
    assert token_request(http, signed).status_code == 200
    again = token_request(http, signed)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "http://testserver/auth/other"},
        {"exp": int(time.time()) + 3600},
        {"exp": int(time.time()) - 10},
        {"sub": "someone-else"},
    ],
)
def test_bad_assertion_claims_are_refused(http: TestClient, ec_client, claims) -> None:  # type: ignore[no-untyped-def]
    client_id, key = ec_client
    response = token_request(http, assertion(client_id, key, **claims))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_wrong_algorithm_and_wrong_key_are_refused(http: TestClient, smart, ec_client) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = ec_client
    rsa = RSAKey.generate_key(2048, parameters={"kid": "ec-1"})
    assert token_request(http, assertion(client_id, rsa, alg="RS256")).status_code == 401
    assert token_request(http, assertion(client_id, rsa, alg="RS384")).status_code == 401
    stranger = ECKey.generate_key("P-384", parameters={"kid": "ec-1"})
    assert token_request(http, assertion(client_id, stranger)).status_code == 401


def test_jwks_with_two_keys_for_one_kid_is_refused(smart) -> None:  # type: ignore[no-untyped-def]
    from smart_auth.registry import RegistryError

    a = ECKey.generate_key("P-384", parameters={"kid": "same"}).as_dict(private=False)
    b = ECKey.generate_key("P-384", parameters={"kid": "same"}).as_dict(private=False)
    with pytest.raises(RegistryError, match="two keys"):
        smart.client("system/*.rs", "confidential-jwks", jwks={"keys": [a, b]})


def test_backend_scope_limited_to_registration(http: TestClient, ec_client) -> None:  # type: ignore[no-untyped-def]
    client_id, key = ec_client
    refused = token_request(http, assertion(client_id, key), scope="system/*.cruds")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    user_scope = token_request(http, assertion(client_id, key), scope="user/*.rs")
    assert user_scope.json()["error"] == "invalid_scope"


class _JwksHandler(BaseHTTPRequestHandler):
    jwks: dict[str, Any] = {}
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = json.dumps(self.jwks).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[_JwksHandler]]]:
    handler = type("Handler", (_JwksHandler,), {"jwks": {}, "hits": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json", handler
    server.shutdown()
    server.server_close()


def test_jwks_url_is_fetched_and_cached(http: TestClient, smart, jwks_server) -> None:  # type: ignore[no-untyped-def]
    url, handler = jwks_server
    key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    handler.jwks = {"keys": [key.as_dict(private=False)]}
    client_id, _ = smart.client("system/*.rs", "confidential-jwks", jwks_url=url)
    for _ in range(2):
        response = token_request(http, assertion(client_id, key, alg="RS384"))
        assert response.status_code == 200, response.text
    assert handler.hits == 1  # max-age=600 honoured


def test_introspection(http: TestClient, smart, ec_client) -> None:  # type: ignore[no-untyped-def]
    client_id, key = ec_client
    token = token_request(http, assertion(client_id, key)).json()["access_token"]
    # a resource server (designated by the operator) may introspect any client's token
    caller_id, secret = smart.client("system/token.introspect", "confidential-secret")
    active = http.post("/auth/introspect", data={"token": token}, auth=(caller_id, secret)).json()
    assert active["active"] is True and active["client_id"] == client_id
    assert active["scope"] == "system/*.rs" and active["exp"] > time.time()
    unknown = http.post("/auth/introspect", data={"token": "nope"}, auth=(caller_id, secret))
    assert unknown.status_code == 200 and unknown.json() == {"active": False}
    anonymous = http.post("/auth/introspect", data={"token": token})
    assert anonymous.status_code == 401


def test_client_secret_post(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, secret = smart.client("system/Patient.rs", "confidential-secret")
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 200 and response.json()["expires_in"] <= 300


def test_dynamic_registration(http: TestClient) -> None:
    response = http.post(
        "/auth/register",
        json={
            "client_name": "My app",
            "redirect_uris": ["https://my.app/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "launch/patient patient/*.rs user/*.rs",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["client_id"] and body["client_secret"]
    assert body["scope"] == "launch/patient patient/*.rs"  # user/ needs an operator
    backend = http.post(
        "/auth/register",
        json={
            "client_name": "Greedy",
            "redirect_uris": [],
            "scope": "system/*.cruds",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": []},
        },
    )
    assert backend.status_code == 400
    assert http.post("/auth/register", content=b"not json").status_code == 400


def test_registration_can_be_turned_off(database_url: str) -> None:
    from interop.app import create_app
    from interop.settings import Settings

    app = create_app(
        Settings(
            database_url=database_url,
            auth="on",
            auth_registration=False,
            base_url="http://testserver/fhir",
        ),
        migrate=False,
    )
    with TestClient(app) as client:
        doc = client.get("/fhir/.well-known/smart-configuration").json()
        assert "registration_endpoint" not in doc
        assert client.post("/auth/register", json={"client_name": "x"}).status_code == 403
    app.state.store.engine.dispose()
