"""Support for the sign-in, registration and secrets tests: a fresh database per test (for
what happens at start), and a browser-like driver of the authorization pages."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient
from store_support import own_database

BASE = "http://testserver/fhir"
REDIRECT = "https://app.example/callback"
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (the session databases must keep their signing keys)."""
    with own_database(request.param, tmp_path, "interop_sec") as url:
        yield url


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def request_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["request"][0]


@dataclass
class Browser:
    """Walks the authorization pages like a person in a browser."""

    http: TestClient
    app: Any

    @property
    def registry(self) -> Any:
        return self.app.state.auth.registry

    def authorize(self, client_id: str, scope: str, **extra: str) -> Any:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "st",
            "aud": BASE,
            "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            **extra,
        }
        return self.http.get("/auth/authorize?" + urlencode(params), follow_redirects=False)

    def login_page(self, client_id: str, scope: str = "openid patient/*.rs", **extra: str) -> Any:
        start = self.authorize(client_id, scope, **extra)
        assert start.status_code == 303, start.text
        page = self.http.get("/auth/" + start.headers["location"])
        page.request_id = request_of(start.headers["location"])  # type: ignore[attr-defined]
        return page

    def sign_in(self, page: Any, username: str, password: str = PASSWORD) -> Any:
        return self.http.post(
            "/auth/login",
            data={
                "request": page.request_id,
                "csrf": csrf_of(page.text),
                "username": username,
                "password": password,
            },
            follow_redirects=False,
        )

    def attempt(self, client_id: str, username: str, password: str) -> Any:
        """One sign-in attempt on a fresh login page."""
        return self.sign_in(self.login_page(client_id), username, password)
