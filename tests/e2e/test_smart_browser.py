"""SMART App Launch end to end, with third-party clients against the real server.

The app is the npm `fhirclient` package (SMART's own JavaScript client) in two static pages
on a second origin, run by Debian's headless Chromium. The browser goes through our real
authorize endpoint, login page, patient picker and consent page; fhirclient exchanges the
code (PKCE S256), reads the patient with the token, refreshes it, reads again, and the page
shows what it got. A backend-services client signs its assertion with `jose` (Node.js), with
keys made here. The operator's side (clients, users, launches) goes through the `interop`
command line or the launch API, as in production. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

PASSWORD = "correct horse battery staple"
EHR_SCOPE = "launch openid fhirUser online_access patient/*.rs"
STANDALONE_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

LOGIN, PICK = ("login", "/auth/login"), ("pick", "/auth/pick")
CONSENT, APP = ("consent", "/auth/consent"), ("app", "/index.html")


@dataclass
class Patient:
    id: str
    family: str


@dataclass
class World:
    """What an operator set up for a test: the app, a physician, a patient."""

    client_id: str
    username: str
    practitioner: str
    patient: Patient


@pytest.fixture
def http(server) -> Any:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.origin, timeout=30) as client:
        yield client


@pytest.fixture
def patient(server, http: httpx.Client) -> Patient:  # type: ignore[no-untyped-def]
    """A Patient written over the FHIR API with an operator's token (`interop token`)."""
    tag = uuid.uuid4().hex[:8]
    loader = server.interop(
        "clients", "add", "--name", f"loader {tag}", "--type", "confidential-secret",
        "--scope", "system/Patient.c",
    )  # fmt: skip
    token = server.interop("token", "--client", loader["client_id"], "--scope", "system/Patient.c")
    family = f"Browser{tag}"
    created = http.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}]},
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert created.status_code == 201, created.text
    return Patient(created.json()["id"], family)


@pytest.fixture
def world(server, app_site, patient: Patient) -> World:  # type: ignore[no-untyped-def]
    """The app registered as a public client (`interop clients add`), and a physician
    (`interop users add`)."""
    tag = uuid.uuid4().hex[:8]
    app = server.interop(
        "clients", "add", "--name", f"E2E app {tag}", "--type", "public",
        "--redirect-uri", app_site.redirect_uri, "--launch-url", app_site.launch_url,
        "--scope", f"{EHR_SCOPE} {STANDALONE_SCOPE}",
    )  # fmt: skip
    app_site.config.update(
        clientId=app["client_id"], ehrScope=EHR_SCOPE, standaloneScope=STANDALONE_SCOPE
    )
    username, practitioner = f"dr-{tag}", f"Practitioner/pr-{tag}"
    server.interop(
        "users", "add", username, "--role", "physician", "--fhir-user", practitioner,
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    return World(app["client_id"], username, practitioner, patient)


def pages(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The pages the browser went through: (what it was, its path)."""
    return [(step["page"], step["path"]) for step in run["trace"]]


def assert_read_with_token(run: dict[str, Any], world: World, scope: str) -> dict[str, Any]:
    """The app page got a token from fhirclient's code exchange and read the patient with it."""
    assert run["state"] == "done", json.dumps(run, indent=2)
    result = run["result"]
    patient = world.patient
    assert result["patientId"] == patient.id
    assert result["patient"]["resourceType"] == "Patient"
    assert result["patient"]["id"] == result["byId"]["id"] == patient.id
    assert f"Ada {patient.family}" in run["text"]  # rendered into the page from the FHIR read
    assert result["fhirUser"] == world.practitioner  # from the id_token fhirclient decoded
    assert result["hasIdToken"] is True
    token = result["token"]
    assert token["token_type"] == "Bearer"
    assert sorted(token["scope"].split()) == sorted(scope.split())
    assert token["patient"] == patient.id
    assert 0 < token["expires_in"] <= 3600
    if "offline_access" in scope or "online_access" in scope:
        # fhirclient's refresh (a public client: the refresh token alone, no client_id)
        assert result["refreshed"] == {
            "newAccessToken": True,
            "newRefreshToken": True,
            "scope": token["scope"],
            "readId": patient.id,
        }
    else:
        assert result["refreshed"] is None and "refresh_token" not in token
    return dict(result)


def test_standalone_launch(server, app_site, world: World, browser) -> None:  # type: ignore[no-untyped-def]
    url = f"{app_site.launch_url}?{urlencode({'iss': server.fhir_base})}"
    run = browser.visit(
        url,
        username=world.username,
        passwords=[PASSWORD],
        search=world.patient.family,
        patient=world.patient.id,
    )
    # the picker is searched by name first, then the one patient found is chosen
    assert pages(run) == [LOGIN, PICK, PICK, CONSENT, APP], run
    assert run["choices"] == [world.patient.id]
    assert sorted(run["offered"]) == sorted(STANDALONE_SCOPE.split())
    assert_read_with_token(run, world, STANDALONE_SCOPE)
    assert urlsplit(run["url"]).path == "/index.html"
    assert "code" not in parse_qs(urlsplit(run["url"]).query)  # fhirclient cleaned it up


def launch_by_api(server, http: httpx.Client, world: World) -> str:  # type: ignore[no-untyped-def]
    """The EHR (a confidential client allowed to launch) asks for a launch over HTTP."""
    ehr = server.interop(
        "clients", "add", "--name", "EHR", "--type", "confidential-secret",
        "--scope", "launch", "--can-launch",
    )  # fmt: skip
    response = http.post(
        "/auth/launch",
        data={"app": world.client_id, "patient": world.patient.id, "encounter": "enc-7"},
        auth=(ehr["client_id"], ehr["client_secret"]),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["launch_url"])


def launch_by_cli(server, http: httpx.Client, world: World) -> str:  # type: ignore[no-untyped-def]
    """An operator makes the launch with `interop launch`."""
    launched = server.interop(
        "launch", "--client", world.client_id, "--patient", world.patient.id, "--encounter", "enc-7"
    )
    return str(launched["launch_url"])


@pytest.mark.parametrize("make_launch", [launch_by_api, launch_by_cli], ids=["api", "cli"])
def test_ehr_launch(server, app_site, world: World, http, browser, make_launch) -> None:  # type: ignore[no-untyped-def]
    launch_url = make_launch(server, http, world)
    query = parse_qs(urlsplit(launch_url).query)
    assert launch_url.startswith(app_site.launch_url + "?")
    assert query["iss"] == [server.fhir_base] and query["launch"]
    # through the CLI's launch the user unticks online_access on the consent page
    untick = ["online_access"] if make_launch is launch_by_cli else []
    run = browser.visit(launch_url, username=world.username, passwords=[PASSWORD], untick=untick)
    assert pages(run) == [LOGIN, CONSENT, APP], run
    assert sorted(run["offered"]) == sorted(EHR_SCOPE.split())
    kept = " ".join(s for s in EHR_SCOPE.split() if s not in untick)
    result = assert_read_with_token(run, world, kept)
    assert result["encounterId"] == "enc-7"
    assert result["token"]["need_patient_banner"] in (True, False)
    if make_launch is launch_by_api:
        # the launch id was single-use: the same launch URL again reaches the app as an error
        again = browser.visit(launch_url, username=world.username, passwords=[PASSWORD])
        assert pages(again) == [APP] and again["state"] == "error", again
        assert "invalid_request" in again["result"]["error"]


def test_wrong_password_then_denied_consent(server, app_site, world, browser) -> None:  # type: ignore[no-untyped-def]
    """A wrong password keeps the user on our login page; a denial reaches the app, whose
    fhirclient reports the server's access_denied."""
    url = f"{app_site.launch_url}?{urlencode({'iss': server.fhir_base})}"
    run = browser.visit(
        url,
        username=world.username,
        passwords=["not the password", PASSWORD],
        patient=world.patient.id,
        decision="deny",
    )
    assert pages(run) == [LOGIN, LOGIN, PICK, CONSENT, APP], run
    assert run["trace"][1]["error"] == "Wrong user name or password."
    assert run["state"] == "error"
    assert "access_denied" in run["result"]["error"]


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_backend_services(server, patient: Patient, http, run_node, tmp_path: Path, alg) -> None:  # type: ignore[no-untyped-def]
    """client_credentials with private_key_jwt: the key pair is made here, the JWKS registered
    with `interop clients add --jwks`, the assertion signed by `jose`."""
    keys = json.loads(run_node("assertion.mjs", "keygen", alg, f"key-{alg}"))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [keys["public"]]}))
    client = server.interop(
        "clients", "add", "--name", f"backend {alg}", "--type", "confidential-jwks",
        "--jwks", str(jwks), "--scope", "system/*.rs",
    )  # fmt: skip

    def token_request(key: dict[str, Any]) -> httpx.Response:
        claims = {
            "alg": alg,
            "key": key,
            "clientId": client["client_id"],
            "tokenUrl": server.token_url,
        }
        signed = run_node("assertion.mjs", "sign", json.dumps(claims)).strip()
        return http.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "system/Patient.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": signed,
            },
        )

    response = token_request(keys["private"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/Patient.rs"
    assert 0 < body["expires_in"] <= 300 and "refresh_token" not in body
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    read = http.get(f"/fhir/Patient/{patient.id}", headers=auth)
    assert read.status_code == 200, read.text
    assert read.json()["name"][0]["family"] == patient.family
    assert http.get(f"/fhir/Patient/{patient.id}").status_code == 401

    # the same kid, but a key the client never registered: refused as invalid_client
    stranger = json.loads(run_node("assertion.mjs", "keygen", alg, f"key-{alg}"))
    refused = token_request(stranger["private"])
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_client"
