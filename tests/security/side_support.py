"""Fixtures for the side-endpoint and token-lifecycle attacks: a server with auth on, two
patients, and real tokens from our own authorization server (walked through its HTTP flows by
the `Smart` driver of tests/smart_auth, loaded from there rather than copied)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"


def _load(name: str, relative: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


flows = _load("smart_auth_flows", "smart_auth/conftest.py")
hooks = _load("subscription_hooks", "subscriptions/subscription_helpers.py")
Smart = flows.Smart
REDIRECT = flows.REDIRECT
Receiver = hooks.Receiver
eventually = hooks.eventually


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def side_session_app(database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("side-bulk")
    settings = Settings(
        database_url=database_url,
        auth="on",
        base_url=BASE,
        bulk_dir=str(folder),
        outbound_allow_subscriptions="127.0.0.1",
    )
    app = create_app(settings)
    yield app
    app.state.bulk.close()
    app.state.store.engine.dispose()


@pytest.fixture
def side_app(side_session_app):  # type: ignore[no-untyped-def]
    clear_tables(side_session_app.state.store.engine, keep={"auth_signing_keys"})
    service = side_session_app.state.subscriptions
    service._specs = None
    service.handshakes.clear()
    return side_session_app


@pytest.fixture
def http(side_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(side_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def smart(http: TestClient, side_app: Any) -> Any:
    return Smart(http, side_app)


def backend(smart: Any, scope: str) -> tuple[dict[str, str], str, str]:
    """(headers with a client_credentials token, client id, secret) of a new backend."""
    client_id, secret = smart.client(scope, "confidential-secret")
    response = smart.http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, secret),
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"]), client_id, secret


def user_token(
    smart: Any, username: str, role: str, scope: str, patient: str | None = None
) -> dict[str, Any]:
    """The token response of a user of `role` signing in to a new public app for `scope`
    (standalone patient launch when `patient` is given)."""
    if smart.server.registry.user(username) is None:
        fhir_user = f"Patient/{patient}" if role == "patient" else f"Practitioner/{username}"
        smart.server.registry.add_user(username, flows.PASSWORD, role, fhir_user)
    client_id, _ = smart.client(scope)
    start = smart.authorize(client_id, scope)
    step = smart.login(start, username=username)
    if step.headers["location"].startswith("pick"):
        step = smart.pick(step, patient)
    done = smart.consent(step)
    assert done.status_code == 302, done.text
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": start.verifier,
        "client_id": client_id,
    }
    response = smart.http.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["client_id"] = client_id
    body["_form"] = form
    return body


def patient_app(smart: Any, patient: str, scope: str = "patient/*.rs") -> dict[str, str]:
    """A patient-launched app confined to `patient` (standalone launch, picked patient)."""
    body = user_token(smart, "clara", "physician", f"launch/patient {scope}", patient)
    assert body["patient"] == patient
    return bearer(body["access_token"])


@pytest.fixture
def two_patients(http: TestClient, smart: Any) -> dict[str, str]:
    """Patients A and B, written by a backend."""
    admin, _, _ = backend(smart, "system/*.cruds")
    out = {}
    for name in ("A", "B"):
        response = http.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": f"Patient{name}"}]},
            headers=admin,
        )
        assert response.status_code == 201, response.text
        out[name] = response.json()["id"]
    return out


def is_outcome(response: Any, status: int) -> bool:
    """The refusal is the given status with a FHIR OperationOutcome body."""
    if response.status_code != status:
        return False
    return bool(response.json().get("resourceType") == "OperationOutcome")
