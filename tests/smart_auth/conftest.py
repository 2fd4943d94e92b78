"""Fixtures for the authorization server: an app with auth on, and a `Smart` driver that walks
the real HTTP flows (authorize, login form, consent form, token) like a browser and an app."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"
TOKEN_URL = "http://testserver/auth/token"
REDIRECT = "https://app.example/callback"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def auth_session_app(database_url: str):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database_url, auth="on", base_url=BASE,
                        outbound_allow_jwks="127.0.0.1")  # the test JWKS servers  # fmt: skip
    app = create_app(settings)
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def auth_app(auth_session_app):  # type: ignore[no-untyped-def]
    clear_tables(auth_session_app.state.store.engine, keep={"auth_signing_keys"})
    return auth_session_app


@pytest.fixture
def http(auth_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(auth_app, base_url="http://testserver") as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@dataclass
class Smart:
    http: TestClient
    app: Any

    @property
    def server(self) -> Any:
        return self.app.state.auth

    def client(self, scope: str, client_type: str = "public", **extra: Any) -> tuple[str, str]:
        client, secret = self.server.registry.add_client(
            name="Test app",
            client_type=client_type,
            redirect_uris=[REDIRECT],
            scope=scope,
            **extra,
        )
        return client.client_id, secret or ""

    def user(self, name: str = "alice", role: str = "physician", fhir_user: str | None = None):  # type: ignore[no-untyped-def]
        return self.server.registry.add_user(name, PASSWORD, role, fhir_user or "Practitioner/p1")

    def authorize(self, client_id: str, scope: str, **overrides: Any) -> Any:
        verifier, challenge = pkce()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "st-123",
            "aud": BASE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        params = {k: v for k, v in params.items() if v is not None}
        response = self.http.get("/auth/authorize?" + urlencode(params), follow_redirects=False)
        response.verifier = verifier  # type: ignore[attr-defined]
        return response

    def login(self, response: Any, username: str = "alice", password: str = PASSWORD) -> Any:
        assert response.status_code == 303, response.text
        page = self.http.get(response.headers["location"].replace("login", "/auth/login"))
        assert page.status_code == 200
        request_id = parse_qs(urlsplit(response.headers["location"]).query)["request"][0]
        return self.http.post(
            "/auth/login",
            data={
                "request": request_id,
                "csrf": csrf_of(page.text),
                "username": username,
                "password": password,
            },
            follow_redirects=False,
        )

    def consent(self, response: Any, keep: list[str] | None = None, decision: str = "allow"):  # type: ignore[no-untyped-def]
        assert response.status_code == 303, response.text
        location = "/auth/" + response.headers["location"]
        page = self.http.get(location)
        assert page.status_code == 200, page.text
        offered = re.findall(r'name="scope" value="([^"]+)"', page.text)
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        data: dict[str, Any] = {
            "request": request_id,
            "csrf": csrf_of(page.text),
            "decision": decision,
            "scope": offered if keep is None else keep,
        }
        return self.http.post("/auth/consent", data=data, follow_redirects=False)

    def code_flow(
        self,
        client_id: str,
        scope: str,
        secret: str = "",
        keep: list[str] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        start = self.authorize(client_id, scope, **overrides)
        after_login = self.login(start)
        if after_login.headers["location"].startswith("pick"):
            after_login = self.pick(after_login, overrides.pop("_patient", None))
        if after_login.headers["location"].startswith("encounter"):
            after_login = self.choose_encounter(after_login, overrides.pop("_encounter", None))
        done = self.consent(after_login, keep)
        assert done.status_code == 302, done.text
        query = parse_qs(urlsplit(done.headers["location"]).query)
        assert query["state"] == ["st-123"]
        form = {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": start.verifier,
            "client_id": client_id,
        }
        auth = (client_id, secret) if secret else None
        response = self.http.post("/auth/token", data=form, auth=auth)
        assert response.status_code == 200, response.text
        return response.json()

    def pick(self, response: Any, patient: str | None) -> Any:
        location = "/auth/" + response.headers["location"]
        page = self.http.get(location)
        options = re.findall(r'name="patient" value="([^"]+)"', page.text)
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        return self.http.post(
            "/auth/pick",
            data={
                "request": request_id,
                "csrf": csrf_of(page.text),
                "patient": patient or options[0],
            },
            follow_redirects=False,
        )

    def choose_encounter(self, response: Any, encounter: str | None) -> Any:
        """The encounter picker: the given encounter, else the first listed (or none)."""
        location = "/auth/" + response.headers["location"]
        page = self.http.get(location)
        assert page.status_code == 200, page.text
        options = re.findall(r'name="encounter" value="([^"]+)"', page.text)
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        chosen = encounter if encounter is not None else (options[0] if options else "")
        return self.http.post(
            "/auth/encounter",
            data={"request": request_id, "csrf": csrf_of(page.text), "encounter": chosen},
            follow_redirects=False,
        )

    def backend_token(self, scope: str) -> str:
        client_id, secret = self.client(scope, "confidential-secret")
        response = self.http.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(client_id, secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


@pytest.fixture
def smart(http: TestClient, auth_app: Any) -> Smart:
    return Smart(http, auth_app)
