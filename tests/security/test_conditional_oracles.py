"""Class 3: conditional operations as oracles.

The search behind every conditional create (REST `If-None-Exist` and in Bundles), conditional
update, patch and delete, conditional reference, `_has`, chain and `_include`/`_revinclude`
runs under the caller's access filter: for an app confined to patient A, B's records are
absent. They are never returned, overwritten or deleted, and the answer is the one a
non-existent match gets (status, body, Location), never a hint. Clinicians and backends see
everything, as before.
"""

# ruff: noqa: F811 - the fixtures imported from policy_support are parameters by name

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from policy_support import (  # noqa: F401 - fixtures are used by name
    JSON_PATCH,
    MRN,
    SECRET_CODE,
    SHARED_CODE,
    backend,
    body_of,
    count,
    http,
    ids,
    observation,
    patient_app,
    policy_session_app,
    refused,
    smart,
    transaction,
    user_app,
    world,
)
from starlette.testclient import TestClient


def _create_if_none_exist(
    http: TestClient, app: dict[str, str], resource: dict[str, Any], condition: str
) -> Any:
    headers = {**app, "If-None-Exist": condition}
    return http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)


def _resources(node: Any) -> Iterator[str]:
    """`Type/id` of every resource in a JSON answer (the body, Bundle entries, contained)."""
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str) and isinstance(node.get("id"), str):
            yield f"{node['resourceType']}/{node['id']}"
        for value in node.values():
            yield from _resources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _resources(item)


def _leaks(response: Any, world: dict[str, Any]) -> bool:
    """Whether any of B's records, or what only they hold, shows in the answer: as a
    resource, in Location / Content-Location / ETag, or B's given name (never in a query)."""
    hidden = {f"Patient/{world['B']}"} | {
        f"Observation/{world[k]}" for k in ("obs_b", "obs_b2", "obs_b3")
    }
    body = response.json() if response.content else None
    if hidden & set(_resources(body)) or "Zoltan" in response.text:
        return True
    where = " ".join(response.headers.get(h, "") for h in ("location", "content-location"))
    return any(h.split("/")[1] in where for h in hidden)


def test_if_none_exist_on_another_patients_record_creates_instead_of_answering_with_it(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    mine = observation(f"Patient/{world['A']}")
    conditions = [
        f"_id={world['obs_b']}",
        f"subject=Patient/{world['B']}",
        f"code={SECRET_CODE}",
        "subject:Patient.name=Bertrand",
        f"subject:Patient.identifier={MRN}|B-0001",
        f"_has:Observation:focus:code={SECRET_CODE}",
    ]
    for condition in conditions:
        response = _create_if_none_exist(http, app, mine, condition)
        assert response.status_code == 201, (condition, response.text)
        assert response.json()["subject"]["reference"] == f"Patient/{world['A']}"
        assert not _leaks(response, world), condition
    absent = _create_if_none_exist(http, app, mine, "_id=no-such-observation")
    assert absent.status_code == 201
    # content for B is refused the same way whether or not the condition matches B's record
    for condition in (f"_id={world['obs_b']}", "_id=no-such-observation"):
        foreign = observation(f"Patient/{world['B']}")
        response = _create_if_none_exist(http, app, foreign, condition)
        assert refused(response) and not _leaks(response, world)
    assert body_of(http, world, f"Observation/{world['obs_b']}")["meta"]["versionId"] == "1"


def test_if_none_exist_counts_only_visible_matches(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    response = _create_if_none_exist(
        http, app, observation(f"Patient/{world['A']}"), f"code={SHARED_CODE}"
    )
    assert response.status_code == 200, response.text  # A's one match, B's two not counted
    assert response.json()["id"] == world["obs_a"]


def test_if_none_exist_on_patient_name_never_answers_with_another_patient(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    person = {"resourceType": "Patient", "name": [{"family": "Bertrand"}]}
    answers = [
        _create_if_none_exist(http, app, person, condition)
        for condition in ("name=Bertrand", f"identifier={MRN}|B-0001", "name=Nobody")
    ]
    assert all(refused(a) and not _leaks(a, world) for a in answers)
    assert len({a.json()["issue"][0]["diagnostics"] for a in answers}) == 1
    assert count(http, world, "Patient?_summary=count") == 2


def test_transaction_if_none_exist_never_answers_with_another_patients_record(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = {**patient_app(smart, world), "Prefer": "return=representation"}
    for condition in (f"_id={world['obs_b']}", f"subject=Patient/{world['B']}"):
        entry = {
            "resource": observation(f"Patient/{world['A']}"),
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": condition},
        }
        response = http.post("/fhir", json=transaction(entry), headers=app)
        assert response.status_code == 200, response.text
        result = response.json()["entry"][0]
        assert result["response"]["status"].startswith("201"), result
        assert result["resource"]["subject"]["reference"] == f"Patient/{world['A']}"
        assert not _leaks(response, world)
    for name in ("Bertrand", "Nobody"):
        entry = {
            "resource": {"resourceType": "Patient", "name": [{"family": name}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"name={name}"},
        }
        response = http.post("/fhir", json=transaction(entry), headers=app)
        assert refused(response) and not _leaks(response, world)
    assert body_of(http, world, f"Observation/{world['obs_b']}")["meta"]["versionId"] == "1"


def test_conditional_update_never_overwrites_a_match_it_cannot_see(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    mine = observation(f"Patient/{world['A']}", status="amended")
    for query in (f"_id={world['obs_b']}", f"subject=Patient/{world['B']}"):
        response = http.put(f"/fhir/Observation?{query}", json=mine, headers=app)
        assert response.status_code == 201, response.text  # no visible match: a create
        assert response.json()["id"] not in (world["obs_b"], world["obs_b2"], world["obs_b3"])
        assert not _leaks(response, world)
    # several matches, only one visible: that one is updated, no 412 hints at the others
    shared = http.put(f"/fhir/Observation?code={SHARED_CODE}", json=mine, headers=app)
    assert shared.status_code == 200, shared.text
    assert shared.json()["id"] == world["obs_a"]
    entry = {
        "resource": mine,
        "request": {"method": "PUT", "url": f"Observation?_id={world['obs_b']}"},
    }
    in_bundle = http.post("/fhir", json=transaction(entry), headers=app)
    assert in_bundle.status_code == 200, in_bundle.text
    assert in_bundle.json()["entry"][0]["response"]["status"].startswith("201")
    for key in ("obs_b", "obs_b2", "obs_b3"):
        stored = body_of(http, world, f"Observation/{world[key]}")
        assert stored["meta"]["versionId"] == "1" and stored["status"] == "final"


def test_conditional_delete_never_touches_matches_it_cannot_see(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    response = http.delete(f"/fhir/Observation?subject=Patient/{world['B']}", headers=app)
    assert response.status_code == 204
    shared = http.delete(f"/fhir/Observation?code={SHARED_CODE}", headers=app)
    assert shared.status_code == 204, shared.text  # only A's one counted: no 412
    entry = {"request": {"method": "DELETE", "url": f"Observation?_id={world['obs_b']}"}}
    assert http.post("/fhir", json=transaction(entry), headers=app).status_code == 200
    assert count(http, world, f"Observation?subject=Patient/{world['B']}&_summary=count") == 3
    gone = http.get(f"/fhir/Observation/{world['obs_a']}", headers=world["admin"])
    assert gone.status_code == 410


def test_conditional_patch_on_a_hidden_match_answers_as_if_absent(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = {**patient_app(smart, world), **JSON_PATCH}
    ops = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    hidden = http.patch(f"/fhir/Observation?_id={world['obs_b']}", json=ops, headers=app)
    absent = http.patch("/fhir/Observation?_id=no-such-observation", json=ops, headers=app)
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["issue"][0]["diagnostics"] == absent.json()["issue"][0]["diagnostics"]
    assert body_of(http, world, f"Observation/{world['obs_b']}")["status"] == "final"


def test_conditional_reference_to_another_patient_answers_as_if_absent(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    a = f"Patient/{world['A']}"

    def attempt(reference: str, in_bundle: bool) -> Any:
        resource = observation(a, performer=[{"reference": reference}])
        if not in_bundle:
            return http.post("/fhir/Observation", json=resource, headers=app)
        entry = {"resource": resource, "request": {"method": "POST", "url": "Observation"}}
        return http.post("/fhir", json=transaction(entry), headers=app)

    before = count(http, world, "Observation?_summary=count")
    for in_bundle in (False, True):
        answers = [
            attempt(ref, in_bundle)
            for ref in (
                f"Patient?identifier={MRN}|B-0001",
                "Patient?name=Bertrand",
                f"Patient?identifier={MRN}|nobody",
            )
        ]
        assert all(refused(r, 404) and not _leaks(r, world) for r in answers)
        statuses = {r.status_code for r in answers}
        assert statuses == {404}
    assert count(http, world, "Observation?_summary=count") == before


def test_has_never_reveals_another_patients_records(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world, "patient/*.rs")
    queries = [
        f"Practitioner?_has:Observation:performer:code={SECRET_CODE}",
        f"Practitioner?_has:Observation:performer:subject=Patient/{world['B']}",
        f"Patient?_has:Observation:subject:code={SECRET_CODE}",
        f"Patient?_has:Observation:performer:_id={world['shared']}",
    ]
    for query in queries:
        response = http.get(f"/fhir/{query}", headers=app)
        assert response.status_code == 200, response.text
        assert ids(response.json()) == set(), query
    clinician = user_app(smart, "user/*.rs")
    seen = http.get(f"/fhir/{queries[0]}", headers=clinician).json()
    assert ids(seen) == {f"Practitioner/{world['practitioner']}"}


def test_chain_never_reveals_another_patient(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world, "patient/*.rs")
    queries = [
        "Observation?focus:Patient.name=Bertrand",
        f"Observation?focus:Patient.identifier={MRN}|B-0001",
        "Observation?performer:Patient.name=Bertrand",
        "Observation?subject:Patient.name=Bertrand",
    ]
    for query in queries:
        response = http.get(f"/fhir/{query}", headers=app)
        assert response.status_code == 200, response.text
        assert ids(response.json()) == set(), query
    # A's own records still chain to A
    own = http.get("/fhir/Observation?subject:Patient.name=Abelard", headers=app).json()
    assert f"Observation/{world['obs_a']}" in ids(own)
    for headers in (user_app(smart, "user/*.rs"), backend(smart, "system/*.rs")):
        seen = http.get(f"/fhir/{queries[0]}", headers=headers).json()
        assert ids(seen) == {f"Observation/{world['focus_b']}"}


def test_include_and_revinclude_never_surface_another_patient(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world, "patient/*.rs")
    queries = [
        f"Observation?_id={world['focus_b']}&_include=Observation:focus",
        f"Observation?_id={world['shared']}&_include=Observation:performer",
        f"Observation?_id={world['shared']},{world['focus_b']}&_include=*",
        f"Observation?_id={world['focus_b']}&_include:iterate=Observation:focus",
        f"Practitioner?_revinclude=Observation:performer&_id={world['practitioner']}",
        "Patient?_revinclude=Observation:subject&_revinclude=Observation:performer",
    ]
    for query in queries:
        response = http.get(f"/fhir/{query}", headers=app)
        assert response.status_code in (200, 400), response.text
        assert not _leaks(response, world), query
    clinician = user_app(smart, "user/*.rs")
    seen = http.get(f"/fhir/{queries[0]}", headers=clinician).json()
    assert f"Patient/{world['B']}" in ids(seen)
    revinclude = http.get(f"/fhir/{queries[4]}", headers=clinician).json()
    assert f"Observation/{world['obs_b']}" in ids(revinclude)


def test_backend_conditional_create_still_answers_with_the_existing_record(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    admin = backend(smart, "system/*.cruds")
    response = _create_if_none_exist(
        http, admin, observation(f"Patient/{world['B']}"), f"_id={world['obs_b']}"
    )
    assert response.status_code == 200 and response.json()["id"] == world["obs_b"]
    several = http.put(
        f"/fhir/Observation?code={SHARED_CODE}", json=observation(None), headers=admin
    )
    assert several.status_code == 412  # all three matches count for an unconfined caller
