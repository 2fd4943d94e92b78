"""Class 2: writes outside the compartment.

An app confined to patient A (`patient/*.cruds`, or a user whose role is patient) writes only
what belongs to A alone: new content and the stored version both in A's compartment and in no
other patient's, judged on every reference the Patient CompartmentDefinition lists for the
type (nested ones included), however it is spelled; types outside the compartment are
read-only to it. Clinicians and backends are not confined.
"""

# ruff: noqa: F811 - the fixtures imported from policy_support are parameters by name

from __future__ import annotations

from typing import Any

from policy_support import (  # noqa: F401 - fixtures
    BASE,
    JSON_PATCH,
    MRN,
    backend,
    body_of,
    count,
    http,
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


def _patch(http: TestClient, path: str, ops: list[dict[str, Any]], app: dict[str, str]) -> Any:
    return http.patch(f"/fhir/{path}", json=ops, headers={**app, **JSON_PATCH})


def test_confined_app_cannot_file_a_record_on_another_patient_naming_itself_performer(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    before = count(http, world, "Observation?_summary=count")
    attack = observation(
        f"Patient/{world['B']}", performer=[{"reference": f"Patient/{world['A']}"}]
    )
    response = http.post("/fhir/Observation", json=attack, headers=app)
    assert refused(response)
    assert count(http, world, "Observation?_summary=count") == before


def test_confined_app_cannot_put_another_patient_into_any_compartment_reference(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    a, b = f"Patient/{world['A']}", world["B"]
    spellings = [f"Patient/{b}", f"{BASE}/Patient/{b}", f"Patient/{b}/_history/1"]
    attacks = [observation(a, performer=[{"reference": ref}]) for ref in spellings]
    attacks += [
        {  # a second compartment parameter of another type
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": a},
            "author": [{"reference": f"Patient/{b}"}],
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        },
        {  # a nested one: CarePlan.activity.detail.performer
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": a},
            "activity": [
                {"detail": {"status": "scheduled", "performer": [{"reference": f"Patient/{b}"}]}}
            ],
        },
    ]
    before = count(http, world, "Observation?_summary=count")
    for attack in attacks:
        response = http.post(f"/fhir/{attack['resourceType']}", json=attack, headers=app)
        assert refused(response), (attack, response.text)
    assert count(http, world, "Observation?_summary=count") == before
    assert count(http, world, "DocumentReference?_summary=count") == 0
    assert count(http, world, "CarePlan?_summary=count") == 0


def test_confined_app_cannot_file_a_record_that_names_no_patient_of_its_own(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    contained = observation("#p") | {
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p",
                "identifier": [{"system": MRN, "value": "B-0001"}],
            }
        ]
    }
    for attack in (contained, observation(None), observation(f"Group/{world['A']}")):
        assert refused(http.post("/fhir/Observation", json=attack, headers=app))


def test_confined_app_cannot_rewrite_or_patch_another_patients_record(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    target = world["obs_b"]
    mine = observation(f"Patient/{world['A']}") | {"id": target}
    assert refused(http.put(f"/fhir/Observation/{target}", json=mine, headers=app))
    ops = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    assert refused(_patch(http, f"Observation/{target}", ops, app))
    merge = http.patch(
        f"/fhir/Observation/{target}",
        json={"status": "entered-in-error"},
        headers={**app, "Content-Type": "application/merge-patch+json"},
    )
    assert refused(merge)
    stored = body_of(http, world, f"Observation/{target}")
    assert stored["status"] == "final" and stored["meta"]["versionId"] == "1"


def test_confined_app_cannot_move_its_own_record_to_another_patient(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    own, b = world["obs_a"], f"Patient/{world['B']}"
    moved = observation(b) | {"id": own}
    assert refused(http.put(f"/fhir/Observation/{own}", json=moved, headers=app))
    assert refused(
        _patch(
            http,
            f"Observation/{own}",
            [{"op": "replace", "path": "/subject/reference", "value": b}],
            app,
        )
    )
    also_b = [{"op": "add", "path": "/performer", "value": [{"reference": b}]}]
    assert refused(_patch(http, f"Observation/{own}", also_b, app))
    stored = body_of(http, world, f"Observation/{own}")
    assert stored["subject"]["reference"] == f"Patient/{world['A']}"
    assert "performer" not in stored


def test_confined_app_cannot_update_or_delete_a_record_another_patient_shares(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    shared = world["shared"]
    assert http.get(f"/fhir/Observation/{shared}", headers=app).status_code == 200  # readable
    only_mine = observation(f"Patient/{world['A']}") | {"id": shared}
    assert refused(http.put(f"/fhir/Observation/{shared}", json=only_mine, headers=app))
    assert refused(
        _patch(http, f"Observation/{shared}", [{"op": "remove", "path": "/performer"}], app)
    )
    assert refused(http.delete(f"/fhir/Observation/{shared}", headers=app))
    stored = body_of(http, world, f"Observation/{shared}")
    assert stored["performer"] == [{"reference": f"Patient/{world['B']}"}]


def test_confined_app_cannot_write_resources_every_patient_shares(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    prac = world["practitioner"]
    assert http.get(f"/fhir/Practitioner/{prac}", headers=app).status_code == 200  # readable
    rewritten = {"resourceType": "Practitioner", "id": prac, "name": [{"family": "Impostor"}]}
    attempts = [
        http.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}, headers=app),
        http.put(f"/fhir/Practitioner/{prac}", json=rewritten, headers=app),
        _patch(
            http,
            f"Practitioner/{prac}",
            [{"op": "replace", "path": "/name/0/family", "value": "X"}],
            app,
        ),
        http.delete(f"/fhir/Practitioner/{prac}", headers=app),
        http.post(
            "/fhir/Organization", json={"resourceType": "Organization", "name": "Mine"}, headers=app
        ),
        http.put(
            "/fhir/Medication/new-med",
            json={"resourceType": "Medication", "id": "new-med"},
            headers=app,
        ),
        http.put(f"/fhir/Practitioner?_id={prac}", json=rewritten, headers=app),
        http.delete(f"/fhir/Organization?_id={world['organization']}", headers=app),
    ]
    for response in attempts:
        assert refused(response), response.text
    assert body_of(http, world, f"Practitioner/{prac}")["name"] == [{"family": "Healer"}]
    assert count(http, world, "Organization?_summary=count") == 1
    assert count(http, world, "Medication?_summary=count") == 0


def test_confined_app_cannot_create_take_over_or_delete_patients(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    a, b = world["A"], world["B"]
    person = {"resourceType": "Patient", "name": [{"family": "Newborn"}]}
    assert refused(http.post("/fhir/Patient", json=person, headers=app))
    assert refused(http.put(f"/fhir/Patient/{b}", json=person | {"id": b}, headers=app))
    assert refused(
        http.put("/fhir/Patient/brand-new", json=person | {"id": "brand-new"}, headers=app)
    )
    linked = {
        "resourceType": "Patient",
        "id": a,
        "name": [{"family": "Abelard"}],
        "link": [{"other": {"reference": f"Patient/{b}"}, "type": "seealso"}],
    }
    assert refused(http.put(f"/fhir/Patient/{a}", json=linked, headers=app))
    assert refused(http.delete(f"/fhir/Patient/{a}", headers=app))
    assert count(http, world, "Patient?_summary=count") == 2
    # its own record it may keep up to date
    own = {"resourceType": "Patient", "id": a, "name": [{"family": "Abelard", "given": ["Ann"]}]}
    assert http.put(f"/fhir/Patient/{a}", json=own, headers=app).status_code == 200


def test_confined_app_transaction_with_one_foreign_entry_writes_nothing(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    a, b = f"Patient/{world['A']}", world["B"]
    post = {"method": "POST", "url": "Observation"}
    fine = {"resource": observation(a), "request": post}
    attacks = [
        [
            fine,
            {
                "resource": observation(a, performer=[{"reference": f"{BASE}/Patient/{b}"}]),
                "request": post,
            },
        ],
        [
            fine,
            {
                "resource": {"resourceType": "Practitioner", "id": world["practitioner"]},
                "request": {"method": "PUT", "url": f"Practitioner/{world['practitioner']}"},
            },
        ],
        [  # a placeholder that resolves to B through a conditional create
            {
                "fullUrl": "urn:uuid:0b6d5c8e-5c52-4a4c-9d47-2d3f6c1c0b01",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": "B-0001"}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={MRN}|B-0001",
                },
            },
            {
                "resource": observation(
                    a, performer=[{"reference": "urn:uuid:0b6d5c8e-5c52-4a4c-9d47-2d3f6c1c0b01"}]
                ),
                "request": post,
            },
        ],
        [  # moving B's record into A's compartment, next to a harmless entry
            fine,
            {
                "resource": observation(a) | {"id": world["obs_b"]},
                "request": {"method": "PUT", "url": f"Observation/{world['obs_b']}"},
            },
        ],
        [fine, {"request": {"method": "DELETE", "url": f"Observation/{world['obs_b']}"}}],
    ]
    before = count(http, world, "Observation?_summary=count")
    for entries in attacks:
        response = http.post("/fhir", json=transaction(*entries), headers=app)
        assert refused(response), response.text
    assert count(http, world, "Observation?_summary=count") == before
    assert count(http, world, "Patient?_summary=count") == 2
    assert body_of(http, world, f"Observation/{world['obs_b']}")["meta"]["versionId"] == "1"


def test_confined_app_batch_entries_are_judged_one_by_one(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    post = {"method": "POST", "url": "Observation"}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": observation(f"Patient/{world['A']}"), "request": post},
            {"resource": observation(f"Patient/{world['B']}"), "request": post},
        ],
    }
    response = http.post("/fhir", json=batch, headers=app)
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["201", "403"]
    assert count(http, world, f"Observation?subject=Patient/{world['B']}&_summary=count") == 3


def test_confined_app_deletes_only_records_of_its_own(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    assert refused(http.delete(f"/fhir/Observation/{world['obs_b']}", headers=app))
    # a conditional delete does not see it: nothing matches, nothing is deleted
    assert http.delete(f"/fhir/Observation?_id={world['obs_b']}", headers=app).status_code == 204
    assert (
        http.get(f"/fhir/Observation/{world['obs_b']}", headers=world["admin"]).status_code == 200
    )
    assert http.delete(f"/fhir/Observation/{world['obs_a']}", headers=app).status_code == 204


def test_patient_role_user_is_confined_like_a_patient_scope(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = user_app(smart, "patient/*.cruds", world["A"], role="patient")
    assert refused(
        http.post("/fhir/Observation", json=observation(f"Patient/{world['B']}"), headers=app)
    )
    assert refused(
        http.put(
            f"/fhir/Practitioner/{world['practitioner']}",
            json={"resourceType": "Practitioner", "id": world["practitioner"]},
            headers=app,
        )
    )
    mine = http.post("/fhir/Observation", json=observation(f"Patient/{world['A']}"), headers=app)
    assert mine.status_code == 201


def test_confined_app_still_writes_its_own_records(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    app = patient_app(smart, world)
    a = f"Patient/{world['A']}"
    prac = [{"reference": f"Practitioner/{world['practitioner']}"}]
    new = http.post("/fhir/Observation", json=observation(a, performer=prac), headers=app)
    assert new.status_code == 201, new.text
    by_search = http.post(
        "/fhir/Observation",
        json=observation(f"Patient?_id={world['A']}"),
        headers=app,
    )
    assert by_search.status_code == 201, by_search.text
    assert by_search.json()["subject"]["reference"] == a
    own = world["obs_a"]
    ops = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert _patch(http, f"Observation/{own}", ops, app).status_code == 200
    updated = observation(a) | {"id": own, "status": "corrected"}
    assert http.put(f"/fhir/Observation/{own}", json=updated, headers=app).status_code == 200
    assert (
        http.put(
            f"/fhir/Observation?_id={own}", json=updated | {"status": "final"}, headers=app
        ).status_code
        == 200
    )
    assert http.delete(f"/fhir/Observation/{new.json()['id']}", headers=app).status_code == 204


def test_backend_and_clinician_writes_are_not_confined(
    http: TestClient, smart: Any, world: dict[str, Any]
) -> None:
    a, b = f"Patient/{world['A']}", f"Patient/{world['B']}"
    for headers in (
        backend(smart, "system/*.cruds"),
        user_app(smart, "user/*.cruds"),
    ):
        cross = observation(b, performer=[{"reference": a}])
        assert http.post("/fhir/Observation", json=cross, headers=headers).status_code == 201
        prac = {"resourceType": "Practitioner", "id": world["practitioner"], "active": True}
        response = http.put(
            f"/fhir/Practitioner/{world['practitioner']}", json=prac, headers=headers
        )
        assert response.status_code == 200
        shared = observation(a) | {"id": world["shared"], "status": "amended"}
        response = http.put(f"/fhir/Observation/{world['shared']}", json=shared, headers=headers)
        assert response.status_code == 200
