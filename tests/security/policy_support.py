"""Fixtures for the access-policy attacks (writes outside the compartment, conditional
operations as oracles): a server with auth on, patients A and B with records of their own and
shared ones, and real tokens from our own authorization server, walked through its HTTP flows
by the `Smart` driver of tests/smart_auth (loaded from there rather than copied)."""

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
FHIR = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MRN = "urn:oid:1.2.36.146.595.217.0.1"
SECRET_CODE = "secret-test"  # only B's Observations carry it
SHARED_CODE = "shared-test"  # one Observation of A and two of B carry it


def _flows() -> Any:
    """tests/smart_auth/conftest.py as a module (a plain `import conftest` may get another's)."""
    name = "smart_auth_flows"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "smart_auth" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


flows = _flows()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **FHIR}


@pytest.fixture(scope="session")
def policy_session_app(database_url: str):  # type: ignore[no-untyped-def]
    app = create_app(Settings(database_url=database_url, auth="on", base_url=BASE))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def http(policy_session_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    clear_tables(policy_session_app.state.store.engine, keep={"auth_signing_keys"})
    with TestClient(policy_session_app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def smart(http: TestClient, policy_session_app: Any) -> Any:
    return flows.Smart(http, policy_session_app)


def backend(smart: Any, scope: str) -> dict[str, str]:
    """Headers with a backend-services (client_credentials) token for `scope`."""
    return bearer(smart.backend_token(scope))


def user_app(smart: Any, scope: str, patient: str | None = None, role: str = "physician") -> Any:
    """Headers of a public app a user of `role` signed in to for `scope`; with `patient`, a
    standalone patient launch where the user picked that patient."""
    username = f"{role}-user"
    if smart.server.registry.user(username) is None:
        fhir_user = f"Patient/{patient}" if role == "patient" else "Practitioner/p1"
        smart.server.registry.add_user(username, flows.PASSWORD, role, fhir_user)
    launch = "launch/patient " if patient and role != "patient" else ""
    client_id, _ = smart.client(launch + scope)
    start = smart.authorize(client_id, launch + scope)
    step = smart.login(start, username=username)
    if step.headers["location"].startswith("pick"):
        step = smart.pick(step, patient)
    done = smart.consent(step)
    assert done.status_code == 302, done.text
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flows.REDIRECT,
        "code_verifier": start.verifier,
        "client_id": client_id,
    }
    response = smart.http.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    if launch:
        assert body.get("patient") == patient, body
    return bearer(body["access_token"])


def patient_app(smart: Any, world: dict[str, Any], scope: str = "patient/*.cruds") -> Any:
    """An app confined to patient A."""
    return user_app(smart, scope, world["A"])


def observation(subject: str | None, code: str = "glucose", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://example.org/codes", "code": code}]},
    }
    if subject is not None:
        resource["subject"] = {"reference": subject}
    return resource | extra


def created(http: TestClient, headers: dict[str, str], resource: dict[str, Any]) -> str:
    response = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def world(http: TestClient, smart: Any) -> dict[str, Any]:
    """Patients A and B (B with an MRN and a distinctive name), a Practitioner and an
    Organization, and Observations: A's own, B's own (one with a code only B has), one of A
    with a `focus` on B, and one shared (subject A, performer B); written by a backend."""
    admin = backend(smart, "system/*.cruds")
    w: dict[str, Any] = {"admin": admin}
    w["A"] = created(http, admin, {"resourceType": "Patient", "name": [{"family": "Abelard"}]})
    w["B"] = created(
        http,
        admin,
        {
            "resourceType": "Patient",
            "name": [{"family": "Bertrand", "given": ["Zoltan"]}],
            "identifier": [{"system": MRN, "value": "B-0001"}],
        },
    )
    w["practitioner"] = created(
        http, admin, {"resourceType": "Practitioner", "name": [{"family": "Healer"}]}
    )
    w["organization"] = created(http, admin, {"resourceType": "Organization", "name": "Clinic"})
    performer = [{"reference": f"Practitioner/{w['practitioner']}"}]
    w["obs_a"] = created(http, admin, observation(f"Patient/{w['A']}", SHARED_CODE))
    w["obs_b"] = created(
        http, admin, observation(f"Patient/{w['B']}", SECRET_CODE, performer=performer)
    )
    w["obs_b2"] = created(http, admin, observation(f"Patient/{w['B']}", SHARED_CODE))
    w["obs_b3"] = created(http, admin, observation(f"Patient/{w['B']}", SHARED_CODE))
    w["focus_b"] = created(
        http,
        admin,
        observation(
            f"Patient/{w['A']}", "family-history", focus=[{"reference": f"Patient/{w['B']}"}]
        ),
    )
    w["shared"] = created(
        http,
        admin,
        observation(f"Patient/{w['A']}", performer=[{"reference": f"Patient/{w['B']}"}]),
    )
    return w


def body_of(http: TestClient, world: dict[str, Any], path: str) -> Any:
    """The stored resource as the backend sees it (the ground truth after an attack)."""
    response = http.get(f"/fhir/{path}", headers=world["admin"])
    assert response.status_code == 200, response.text
    return response.json()


def count(http: TestClient, world: dict[str, Any], query: str) -> int:
    response = http.get(f"/fhir/{query}", headers=world["admin"])
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def ids(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") != "outcome"
    }


def refused(response: Any, status: int = 403) -> bool:
    """The answer is the given status with a FHIR OperationOutcome."""
    return bool(
        response.status_code == status and response.json().get("resourceType") == "OperationOutcome"
    )


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}
