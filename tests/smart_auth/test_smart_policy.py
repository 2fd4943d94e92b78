"""The access policy: every FHIR interaction checked against the token's scopes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

FHIR = {"Content-Type": "application/fhir+json"}
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **FHIR}


def observation(patient_id: str, category: str = "laboratory") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
        "code": {"text": "glucose"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


@pytest.fixture
def world(http: TestClient, smart) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Two patients with a lab and a vital-signs Observation each, written by a backend."""
    admin = bearer(smart.backend_token("system/*.cruds"))
    out: dict[str, Any] = {"admin": admin}
    for name in ("anna", "bert"):
        pid = http.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": name}]},
            headers=admin,
        ).json()["id"]
        lab = http.post("/fhir/Observation", json=observation(pid), headers=admin).json()["id"]
        vital = http.post(
            "/fhir/Observation", json=observation(pid, "vital-signs"), headers=admin
        ).json()["id"]
        out[name] = {"id": pid, "lab": lab, "vital": vital}
    return out


def patient_token(smart, world: dict[str, Any], scope: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("launch/patient " + scope)
    smart.user()
    body = smart.code_flow(client_id, "launch/patient " + scope, _patient=world["anna"]["id"])
    assert body["patient"] == world["anna"]["id"]
    assert body["need_patient_banner"] is True
    return bearer(body["access_token"])


def ids(bundle: dict[str, Any]) -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") != "outcome"
    }


def test_patient_token_reads_only_its_patient(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    auth = patient_token(smart, world, "patient/*.rs")
    anna, bert = world["anna"], world["bert"]
    assert http.get(f"/fhir/Observation/{anna['lab']}", headers=auth).status_code == 200
    outside = http.get(f"/fhir/Observation/{bert['lab']}", headers=auth)
    assert outside.status_code == 403
    assert outside.json()["resourceType"] == "OperationOutcome"
    assert http.get(f"/fhir/Patient/{bert['id']}", headers=auth).status_code == 403
    assert http.get(f"/fhir/Patient/{anna['id']}", headers=auth).status_code == 200
    hist = http.get(f"/fhir/Observation/{bert['lab']}/_history/1", headers=auth)
    assert hist.status_code == 403


def test_search_never_crosses_the_compartment(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    auth = patient_token(smart, world, "patient/*.rs")
    anna, bert = world["anna"], world["bert"]
    found = ids(http.get("/fhir/Observation", headers=auth).json())
    assert found == {anna["lab"], anna["vital"]}
    asked_for_bert = http.get(f"/fhir/Observation?subject=Patient/{bert['id']}", headers=auth)
    assert ids(asked_for_bert.json()) == set()
    assert ids(http.get("/fhir/Patient", headers=auth).json()) == {anna["id"]}
    via_compartment = http.get(f"/fhir/Patient/{bert['id']}/Observation", headers=auth)
    assert ids(via_compartment.json()) == set()
    included = http.get("/fhir/Observation?_include=Observation:subject", headers=auth).json()
    assert ids(included) == {anna["lab"], anna["vital"], anna["id"]}


def test_query_restricted_scope(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    auth = patient_token(smart, world, f"patient/Observation.rs?category={LAB}")
    anna = world["anna"]
    assert ids(http.get("/fhir/Observation", headers=auth).json()) == {anna["lab"]}
    assert http.get(f"/fhir/Observation/{anna['lab']}", headers=auth).status_code == 200
    assert http.get(f"/fhir/Observation/{anna['vital']}", headers=auth).status_code == 403
    assert http.get(f"/fhir/Patient/{anna['id']}", headers=auth).status_code == 403


def test_query_restriction_applies_to_written_content(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    auth = patient_token(smart, world, f"patient/Observation.cruds?category={LAB}")
    anna = world["anna"]
    created = http.post("/fhir/Observation", json=observation(anna["id"]), headers=auth)
    assert created.status_code == 201
    vital = http.post(
        "/fhir/Observation", json=observation(anna["id"], "vital-signs"), headers=auth
    )
    assert vital.status_code == 403
    assert "category" in vital.json()["issue"][0]["diagnostics"]
    # turning one's lab result into a vital sign would move it out of reach: refused too
    relabelled = observation(anna["id"], "vital-signs") | {"id": created.json()["id"]}
    put = http.put(f"/fhir/Observation/{created.json()['id']}", json=relabelled, headers=auth)
    assert put.status_code == 403
    patch = http.patch(
        f"/fhir/Observation/{created.json()['id']}",
        json=[{"op": "replace", "path": "/category/0/coding/0/code", "value": "vital-signs"}],
        headers={**auth, "Content-Type": "application/json-patch+json"},
    )
    assert patch.status_code == 403
    post = {"method": "POST", "url": "Observation"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation(anna["id"]), "request": post},
            {"resource": observation(anna["id"], "vital-signs"), "request": post},
        ],
    }
    refused = http.post("/fhir", json=bundle, headers=auth)
    assert refused.status_code == 403 and "entry[1]" in refused.json()["issue"][0]["diagnostics"]
    admin = world["admin"]
    count = http.get("/fhir/Observation", params={"subject": anna["id"]}, headers=admin)
    assert count.json()["total"] == 3  # the two from the world and the one lab created here


def test_user_scope_with_query_restriction_checks_content(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(f"user/Observation.cu?category={LAB}")
    smart.user()
    token = smart.code_flow(client_id, f"user/Observation.cu?category={LAB}")["access_token"]
    auth = bearer(token)
    bert = world["bert"]["id"]
    assert http.post("/fhir/Observation", json=observation(bert), headers=auth).status_code == 201
    other = http.post("/fhir/Observation", json=observation(bert, "imaging"), headers=auth)
    assert other.status_code == 403


def test_patient_writes_stay_in_the_compartment(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    auth = patient_token(smart, world, "patient/Observation.cruds patient/Patient.r")
    anna, bert = world["anna"], world["bert"]
    assert (
        http.post("/fhir/Observation", json=observation(anna["id"]), headers=auth).status_code
        == 201
    )
    assert (
        http.post("/fhir/Observation", json=observation(bert["id"]), headers=auth).status_code
        == 403
    )
    moved = observation(bert["id"]) | {"id": anna["lab"]}
    assert http.put(f"/fhir/Observation/{anna['lab']}", json=moved, headers=auth).status_code == 403
    assert http.delete(f"/fhir/Observation/{bert['lab']}", headers=auth).status_code == 403
    assert http.delete(f"/fhir/Observation/{anna['vital']}", headers=auth).status_code == 204
    # still there: the refused delete changed nothing
    assert http.get(f"/fhir/Observation/{bert['lab']}", headers=world["admin"]).status_code == 200


def test_each_interaction_needs_its_letter(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    read_only = bearer(smart.backend_token("system/Observation.r"))
    lab = world["anna"]["lab"]
    assert http.get(f"/fhir/Observation/{lab}", headers=read_only).status_code == 200
    assert http.get("/fhir/Observation", headers=read_only).status_code == 403
    assert http.get(f"/fhir/Patient/{world['anna']['id']}", headers=read_only).status_code == 403
    assert http.delete(f"/fhir/Observation/{lab}", headers=read_only).status_code == 403
    search_only = bearer(smart.backend_token("system/Observation.s"))
    assert http.get("/fhir/Observation", headers=search_only).status_code == 200
    assert http.get(f"/fhir/Observation/{lab}", headers=search_only).status_code == 403
    create_only = bearer(smart.backend_token("system/Observation.c"))
    new = http.post("/fhir/Observation", json=observation(world["anna"]["id"]), headers=create_only)
    assert new.status_code == 201
    assert (
        http.put(
            f"/fhir/Observation/{lab}",
            json=observation(world["anna"]["id"]) | {"id": lab},
            headers=create_only,
        ).status_code
        == 403
    )


def test_transaction_with_one_disallowed_entry_writes_nothing(
    http: TestClient, smart, world
) -> None:  # type: ignore[no-untyped-def]
    auth = bearer(smart.backend_token("system/Observation.cruds"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": observation(world["anna"]["id"]),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Patient", "name": [{"family": "intruder"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = http.post("/fhir", json=bundle, headers=auth)
    assert response.status_code == 403
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    count = http.get("/fhir/Observation?_summary=count", headers=world["admin"]).json()
    assert count["total"] == 4
    batch = dict(bundle, type="batch")
    statuses = [
        e["response"]["status"]
        for e in http.post("/fhir", json=batch, headers=auth).json()["entry"]
    ]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")


def test_user_scopes_are_capped_by_the_role(http: TestClient, smart, world) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.cruds")
    smart.user("nina", "nurse", "Practitioner/n1")
    start = smart.authorize(client_id, "user/*.cruds")
    done = smart.consent(smart.login(start, username="nina"))
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    token = http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "redirect_uri": "https://app.example/callback",
            "code_verifier": start.verifier,
        },
    ).json()["access_token"]
    auth = bearer(token)
    assert http.get("/fhir/Patient", headers=auth).status_code == 200
    assert http.delete(f"/fhir/Patient/{world['bert']['id']}", headers=auth).status_code == 403
    assert (
        http.post(
            "/fhir/Observation", json=observation(world["anna"]["id"]), headers=auth
        ).status_code
        == 201
    )


def test_revoked_token_stops_working(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, secret = smart.client("system/*.rs", "confidential-secret")
    token = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(client_id, secret),
    ).json()["access_token"]
    assert http.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    assert (
        http.post("/auth/revoke", data={"token": token}, auth=(client_id, secret)).status_code
        == 200
    )
    response = http.get("/fhir/Patient", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
