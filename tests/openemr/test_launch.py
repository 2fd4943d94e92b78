"""SMART apps launched from OpenEMR: /openemr/launch -> OpenEMR's flow -> our EHR launch.

The browser is played by hand: requests to our app go through Starlette's TestClient, requests
to the simulated OpenEMR go over a real loopback port. Cookies are `Secure`, which an http
cookie jar would not send back, so they are carried explicitly (as a browser on localhost does).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from oe_accounts import CLIENT_ID, bridge_settings
from simulator import OpenEmrSimulator
from starlette.testclient import TestClient
from store_support import clear_tables

from fhir_server.api.bundles import apply_transaction
from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"
APP_REDIRECT = "https://app.example/callback"
APP_LAUNCH = "https://app.example/launch"
CLINICIAN, CLINICIAN_PASSWORD = "drsmith", "clinician-pass-1"


@pytest.fixture
def ours(database_url: str, sim: OpenEmrSimulator) -> Iterator[Any]:
    settings = Settings(
        database_url=database_url,
        auth="on",
        base_url=BASE,
        **bridge_settings(sim.base),
    )
    app = create_app(settings)
    clear_tables(app.state.store.engine, keep={"auth_signing_keys"})
    hosted, _ = app.state.auth.registry.add_client(
        name="Imaging viewer",
        client_type="public",
        redirect_uris=[APP_REDIRECT],
        scope="launch openid fhirUser patient/*.rs",
        launch_url=APP_LAUNCH,
    )
    app.state.openemr_launch.settings.app_client = hosted.client_id
    app.state.hosted_client = hosted.client_id
    oe_client = sim.clients[CLIENT_ID]
    oe_client.redirect_uris = ["http://testserver/openemr/callback"]
    oe_client.initiate_login_uri = "http://testserver/openemr/launch"
    sim.add_user(CLINICIAN, CLINICIAN_PASSWORD)
    yield app
    app.state.store.engine.dispose()


def cookie(response: Any, name: str) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    assert name in jar, response.headers
    return jar


def launch_in_openemr(
    ours_client: TestClient, sim: OpenEmrSimulator, patient: dict[str, Any], encounter: Any = None
) -> Any:
    """The dashboard's iframe loads our launch URL; the clinician signs in at OpenEMR."""
    url = sim.launch_url(CLIENT_ID, patient["uuid"], encounter["uuid"] if encounter else None)
    start = ours_client.get(url.replace("http://testserver", ""), follow_redirects=False)
    assert start.status_code == 302, start.text
    assert start.headers["location"].startswith(f"{sim.base}/oauth2/default/authorize?")
    browser = cookie(start, "interop_openemr_launch")["interop_openemr_launch"]
    assert browser["samesite"].lower() == "none" and browser["secure"] and browser["httponly"]
    with httpx.Client() as oe_browser:
        form = oe_browser.get(start.headers["location"])
        assert "password" in form.text
        pending = form.text.split('name=pending value="')[1].split('"')[0]
        back = oe_browser.post(
            f"{sim.base}/oauth2/default/login",
            data={"pending": pending, "username": CLINICIAN, "password": CLINICIAN_PASSWORD},
        )
    assert back.status_code == 302, back.text
    callback = back.headers["location"]
    assert callback.startswith("http://testserver/openemr/callback?")
    return ours_client.get(
        callback.replace("http://testserver", ""),
        headers={"Cookie": f"interop_openemr_launch={browser.value}"},
        follow_redirects=False,
    )


def app_authorize(
    ours_client: TestClient, app: Any, launch: str, sso: str | None
) -> tuple[Any, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    params = {
        "response_type": "code",
        "client_id": app.state.hosted_client,
        "redirect_uri": APP_REDIRECT,
        "scope": "launch openid fhirUser patient/*.rs",
        "state": "app-state",
        "aud": BASE,
        "launch": launch,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    headers = {"Cookie": f"interop_sso={sso}"} if sso else {}
    resp = ours_client.get(
        "/auth/authorize?" + urlencode(params), headers=headers, follow_redirects=False
    )
    return resp, verifier


def test_launch_from_openemr_signs_in_once_and_the_app_reads_our_data(
    ours: Any, sim: OpenEmrSimulator
) -> None:
    patient = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    encounter = sim.add_encounter(patient)
    with TestClient(ours, base_url="http://testserver") as browser:
        done = launch_in_openemr(browser, sim, patient, encounter)
        assert done.status_code == 302, done.text
        framed_by = done.headers["content-security-policy"].split(";")[0]
        assert framed_by == "frame-ancestors " + sim.base  # exactly OpenEMR's origin
        assert "x-frame-options" not in done.headers
        target = urlsplit(done.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == APP_LAUNCH
        query = parse_qs(target.query)
        assert query["iss"] == [BASE]
        sso = cookie(done, "interop_sso")["interop_sso"]
        assert sso["samesite"].lower() == "none" and sso["secure"] and sso["path"] == "/auth"
        store_ctx = ours.state.context
        authorize, verifier = app_authorize(browser, ours, query["launch"][0], sso.value)
        assert authorize.status_code == 302, authorize.text  # no login page, no consent page
        back = parse_qs(urlsplit(authorize.headers["location"]).query)
        assert back["state"] == ["app-state"]
        token = browser.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": back["code"][0],
                "redirect_uri": APP_REDIRECT,
                "code_verifier": verifier,
                "client_id": ours.state.hosted_client,
            },
        ).json()
        patient_id = token["patient"]
        assert token["access_token"] not in sim.tokens  # OpenEMR's tokens never reach the app
        assert token["encounter"]
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        read = browser.get(f"/fhir/Patient/{patient_id}", headers=bearer)
        assert read.status_code == 200
        assert read.json()["name"][0]["family"] == "Nguyen"
        apply_transaction(
            store_ctx,
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "ImagingStudy",
                            "status": "available",
                            "subject": {"reference": f"Patient/{patient_id}"},
                        },
                        "request": {"method": "POST", "url": "ImagingStudy"},
                    }
                ],
            },
        )
        studies = browser.get("/fhir/ImagingStudy", params={"patient": patient_id}, headers=bearer)
        assert studies.status_code == 200 and studies.json()["total"] == 1
        user = ours.state.auth.registry.user(token_user(sim))
        assert user is not None and user.role == "physician"


def token_user(sim: OpenEmrSimulator) -> str:
    fhir_user = sim.users[CLINICIAN]["fhirUser"]
    return "openemr:Practitioner/" + fhir_user.rsplit("/", 1)[1]


def test_without_the_session_our_login_page_is_shown(ours: Any, sim: OpenEmrSimulator) -> None:
    patient = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    with TestClient(ours, base_url="http://testserver") as browser:
        done = launch_in_openemr(browser, sim, patient)
        launch = parse_qs(urlsplit(done.headers["location"]).query)["launch"][0]
        resp, _ = app_authorize(browser, ours, launch, None)
        assert resp.status_code == 303 and resp.headers["location"].startswith("login?")
        login = browser.get("/auth/" + resp.headers["location"])
        assert login.status_code == 200  # shown inside OpenEMR's iframe, framed by it alone
        assert login.headers["content-security-policy"].split(";")[0] == (
            "frame-ancestors " + sim.base
        )


def test_iss_not_on_the_allow_list(ours: Any, sim: OpenEmrSimulator) -> None:
    with TestClient(ours, base_url="http://testserver") as browser:
        resp = browser.get(
            "/openemr/launch", params={"iss": "https://evil.example/fhir", "launch": "x"}
        )
    assert resp.status_code == 403
    assert "does not accept launches" in resp.text
    assert resp.headers["content-security-policy"].split(";")[0] == "frame-ancestors " + sim.base


def test_callback_from_another_browser_or_twice(ours: Any, sim: OpenEmrSimulator) -> None:
    patient = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    url = sim.launch_url(CLIENT_ID, patient["uuid"])
    with TestClient(ours, base_url="http://testserver") as browser:
        start = browser.get(url.replace("http://testserver", ""), follow_redirects=False)
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        other = browser.get(
            "/openemr/callback",
            params={"state": state, "code": "x"},
            headers={"Cookie": "interop_openemr_launch=forged"},
        )
        assert other.status_code == 403
        again = browser.get("/openemr/callback", params={"state": state, "code": "x"})
        assert again.status_code == 400 and "expired or was already used" in again.text


def test_user_type_without_a_role_may_not_launch(ours: Any, sim: OpenEmrSimulator) -> None:
    sim.users[CLINICIAN]["fhirUser"] = f"{sim.fhir_base}/Patient/abc"
    patient = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    with TestClient(ours, base_url="http://testserver") as browser:
        done = launch_in_openemr(browser, sim, patient)
    assert done.status_code == 403
    assert "users of type Patient may not launch" in done.text


def test_disabled_client_in_openemr(ours: Any, sim: OpenEmrSimulator) -> None:
    patient = sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female")
    url = sim.launch_url(CLIENT_ID, patient["uuid"])
    sim.clients[CLIENT_ID].enabled = False
    with TestClient(ours, base_url="http://testserver") as browser:
        start = browser.get(url.replace("http://testserver", ""), follow_redirects=False)
        page = httpx.get(start.headers["location"])
    assert page.status_code == 401 and "disabled" in page.text
