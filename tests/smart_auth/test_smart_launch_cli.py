"""EHR launch (POST /auth/launch and `interop launch`), the standalone patient picker, and the
operator's command line."""

from __future__ import annotations

import io
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from interop.cli import main
from interop.settings import get_settings
from smart_auth.models import launch_contexts

BASE = "http://testserver/fhir"
REDIRECT = "https://app.example/callback"


def make_patient(http: TestClient, smart) -> str:  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {smart.backend_token('system/Patient.c')}"}
    created = http.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Launch"}]},
        headers=auth,
    )
    return str(created.json()["id"])


def ehr_launch(http: TestClient, smart, app_id: str, patient: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    ehr_id, ehr_secret = smart.client("launch", "confidential-secret", can_launch=True)
    response = http.post(
        "/auth/launch",
        data={"app": app_id, "patient": patient, "encounter": "enc-1"},
        auth=(ehr_id, ehr_secret),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_ehr_launch_carries_patient_and_encounter(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    patient = make_patient(http, smart)
    app_id, _ = smart.client(
        "launch patient/*.rs openid fhirUser", launch_url="https://app.example/launch"
    )
    smart.user()
    launched = ehr_launch(http, smart, app_id, patient)
    query = parse_qs(urlsplit(launched["launch_url"]).query)
    assert query["iss"] == [BASE] and query["launch"] == [launched["launch"]]
    body = smart.code_flow(app_id, "launch patient/*.rs openid fhirUser", launch=launched["launch"])
    assert body["patient"] == patient and body["encounter"] == "enc-1"
    assert body["smart_style_url"].startswith("http://testserver/auth/")
    assert http.get(body["smart_style_url"].replace("http://testserver", "")).status_code == 200
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get(f"/fhir/Patient/{patient}", headers=auth).status_code == 200


def test_launch_id_is_single_use_and_expires(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    app_id, _ = smart.client("launch patient/*.rs")
    launched = ehr_launch(http, smart, app_id, "p-1")
    smart.user()
    first = smart.authorize(app_id, "launch patient/*.rs", launch=launched["launch"])
    assert first.status_code == 303
    reused = smart.authorize(app_id, "launch patient/*.rs", launch=launched["launch"])
    assert parse_qs(urlsplit(reused.headers["location"]).query)["error"] == ["invalid_request"]
    expired = ehr_launch(http, smart, app_id, "p-1")["launch"]
    with auth_app.state.store.engine.begin() as conn:
        conn.execute(update(launch_contexts).values(expires=int(time.time()) - 1))
    late = smart.authorize(app_id, "launch patient/*.rs", launch=expired)
    assert parse_qs(urlsplit(late.headers["location"]).query)["error"] == ["invalid_request"]


def test_only_launch_clients_may_create_launches(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, secret = smart.client("launch", "confidential-secret")
    response = http.post("/auth/launch", data={"patient": "x"}, auth=(client_id, secret))
    assert response.status_code == 403
    assert http.post("/auth/launch", data={"patient": "x"}).status_code == 401


def test_standalone_patient_picker(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    patient = make_patient(http, smart)
    client_id, _ = smart.client("launch/patient patient/*.rs")
    smart.user()
    body = smart.code_flow(client_id, "launch/patient patient/*.rs", _patient=patient)
    assert body["patient"] == patient


def test_patient_picker_searches_by_name(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {smart.backend_token('system/Patient.c')}"}
    for family in ("Zimmermann", "Zhou", "Adams"):
        http.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]},
                  headers=auth)  # fmt: skip
    client_id, _ = smart.client("launch/patient patient/*.rs")
    smart.user()
    after_login = smart.login(smart.authorize(client_id, "launch/patient patient/*.rs"))
    location = "/auth/" + after_login.headers["location"]
    everyone = http.get(location).text
    assert all(name in everyone for name in ("Zimmermann", "Zhou", "Adams"))
    found = http.get(location + "&q=zh").text
    assert "Zhou" in found and "Zimmermann" not in found and "Adams" not in found
    assert "No patient matches" in http.get(location + "&q=nobody").text


def test_standalone_encounter_picker(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    patient, other = make_patient(http, smart), make_patient(http, smart)
    auth = {"Authorization": f"Bearer {smart.backend_token('system/Encounter.c')}"}

    def encounter(pid: str, start: str) -> str:
        body = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB", "display": "ambulatory"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": start},
        }
        return str(http.post("/fhir/Encounter", json=body, headers=auth).json()["id"])

    first, second = encounter(patient, "2026-01-05T09:00:00Z"), encounter(patient, "2026-02-01")
    foreign = encounter(other, "2026-03-01")
    scope = "launch/patient launch/encounter patient/*.rs"
    client_id, _ = smart.client(scope)
    smart.user()
    body = smart.code_flow(client_id, scope, _patient=patient, _encounter=second)
    assert (body["patient"], body["encounter"]) == (patient, second)

    picked = smart.pick(smart.login(smart.authorize(client_id, scope)), patient)
    page = http.get("/auth/" + picked.headers["location"]).text
    assert first in page and second in page and foreign not in page
    assert "2026-01-05 09:00" in page  # labelled for a person: class, start, status
    refused = smart.choose_encounter(picked, foreign)
    assert refused.status_code == 400

    lonely = make_patient(http, smart)
    body = smart.code_flow(client_id, scope, _patient=lonely)
    assert body["patient"] == lonely and "encounter" not in body


def test_patient_user_is_bound_to_their_own_record(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    patient = make_patient(http, smart)
    other = make_patient(http, smart)
    client_id, _ = smart.client("launch/patient patient/*.rs")
    smart.user("pat", "patient", f"Patient/{patient}")
    start = smart.authorize(client_id, "launch/patient patient/*.rs")
    done = smart.consent(smart.login(start, username="pat"))
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    body = http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "code_verifier": start.verifier,
        },
    ).json()
    assert body["patient"] == patient
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get(f"/fhir/Patient/{other}", headers=auth).status_code == 403


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, auth_app):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    monkeypatch.setenv("INTEROP_BASE_URL", BASE)
    get_settings.cache_clear()

    def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> Any:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(list(argv)) == 0
        return json.loads(capsys.readouterr().out)

    yield run
    get_settings.cache_clear()


def test_cli_clients_users_token_launch(cli, capsys, http: TestClient) -> None:  # type: ignore[no-untyped-def]
    added = cli(
        capsys,
        "clients",
        "add",
        "--name",
        "Script",
        "--type",
        "confidential-secret",
        "--scope",
        "system/*.rs",
        "--json",
    )
    assert added["client_secret"] and added["type"] == "confidential-secret"
    listed = cli(capsys, "clients", "list", "--json")["clients"]
    assert [c["client_id"] for c in listed] == [added["client_id"]]
    assert "client_secret" not in json.dumps(listed)
    token = cli(capsys, "token", "--client", added["client_id"], "--scope", "system/*.rs", "--json")
    assert token["expires_in"] <= 300
    response = http.get(
        "/fhir/Patient", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert response.status_code == 200
    user = cli(
        capsys,
        "users",
        "add",
        "dora",
        "--role",
        "physician",
        "--fhir-user",
        "Practitioner/d1",
        "--password-stdin",
        "--json",
        stdin="s3cret-password\n",
    )
    assert user == {"username": "dora", "role": "physician", "fhirUser": "Practitioner/d1"}
    app = cli(
        capsys,
        "clients",
        "add",
        "--name",
        "App",
        "--type",
        "public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "launch patient/*.rs",
        "--launch-url",
        "https://app.example/launch",
        "--json",
    )
    launched = cli(capsys, "launch", "--client", app["client_id"], "--patient", "p-9", "--json")
    assert launched["launch_url"].startswith("https://app.example/launch?iss=")
    rotated = cli(capsys, "keys", "rotate", "--json")
    assert rotated["kid"]
    assert cli(capsys, "clients", "remove", added["client_id"], "--json") == {"removed": True}


def test_client_ids_never_look_like_options(smart, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`interop launch --client ID` must work for every id: argparse takes '-x...' for a flag."""
    drawn = iter(["-starts-with-a-dash", "fine-id"])
    monkeypatch.setattr("smart_auth.registry.secrets.token_urlsafe", lambda n=None: next(drawn))
    client_id, _ = smart.client("launch patient/*.rs")
    assert client_id == "fine-id"
