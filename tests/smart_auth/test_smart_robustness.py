"""Bad input never gives a 500 on the authorization server."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LONG = "x" * 5000

BAD_POSTS = [
    ("/auth/token", {"grant_type": "authorization_code", "code": LONG, "client_id": LONG}),
    ("/auth/token", {"grant_type": "refresh_token", "refresh_token": LONG, "client_id": "a"}),
    (
        "/auth/token",
        {
            "grant_type": "client_credentials",
            "client_assertion": "a.b.c",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    ),
    (
        "/auth/token",
        {
            "grant_type": "client_credentials",
            "client_assertion": "!!!.???",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    ),
    ("/auth/introspect", {"token": LONG}),
    ("/auth/revoke", {"token": LONG, "client_id": LONG}),
    ("/auth/launch", {"patient": LONG}),
    ("/auth/login", {"request": LONG, "csrf": LONG}),
    ("/auth/consent", {"request": LONG, "csrf": "x", "scope": "a"}),
    ("/auth/pick", {"request": "", "patient": LONG}),
    ("/auth/authorize", {"client_id": LONG, "redirect_uri": LONG}),
]


@pytest.mark.parametrize(("path", "form"), BAD_POSTS)
def test_bad_forms_are_client_errors(http: TestClient, path: str, form: dict[str, str]) -> None:
    response = http.post(path, data=form)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + "eDp5" * 2000},
        {"Authorization": "Bearer"},
    ],
)
def test_bad_client_authentication(http: TestClient, headers: dict[str, str]) -> None:
    response = http.post("/auth/token", data={"grant_type": "client_credentials"}, headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_non_form_bodies(http: TestClient) -> None:
    for body, content_type in (
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"{}", "application/json"),
        (b"x" * 100_000, "text/plain"),
    ):
        response = http.post("/auth/token", content=body, headers={"Content-Type": content_type})
        assert 400 <= response.status_code < 500


def test_registration_garbage(http: TestClient) -> None:
    for body in (
        {"client_name": LONG, "redirect_uris": ["https://a/cb"]},
        {"redirect_uris": "https://a/cb"},
        {"redirect_uris": [1, 2]},
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "file:///etc/passwd"},
        {"token_endpoint_auth_method": "magic"},
        {"scope": 7},
    ):
        response = http.post("/auth/register", json=body)
        assert response.status_code == 400, (body, response.text)


def test_authorize_garbage_shows_a_page(http: TestClient) -> None:
    for query in ("", "client_id=" + LONG, "client_id=%00&redirect_uri=%ff"):
        response = http.get("/auth/authorize?" + query)
        assert response.status_code == 400
    assert http.get("/auth/login?request=" + LONG).status_code == 400
    assert http.get("/auth/consent").status_code == 400


def test_nul_characters_are_refused(http: TestClient) -> None:
    response = http.post(
        "/auth/register", json={"client_name": "a\u0000b", "redirect_uris": ["https://a/cb"]}
    )
    assert response.status_code == 400
    assert http.post("/auth/token", data={"grant_type": "x\x00"}).status_code == 400
