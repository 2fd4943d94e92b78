"""Composite search parameters over HTTP: each component pairs with a value of the same element."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def post(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def found(client: TestClient, path: str, **params: str) -> set[str]:
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


def component(code: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


@pytest.fixture
def pressures(client: TestClient) -> dict[str, str]:
    """Two blood pressures: 120/80 and 150/95 (systolic 8480-6, diastolic 8462-4)."""
    made = {}
    for name, (sys_value, dia_value) in {"normal": (120, 80), "high": (150, 95)}.items():
        made[name] = post(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
                "component": [component("8480-6", sys_value), component("8462-4", dia_value)],
            },
        )
    made["weight"] = post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}], "text": "Weight"},
            "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"},
        },
    )
    return made


def test_a_pair_from_the_same_component_matches_a_cross_pair_does_not(
    client: TestClient, pressures: dict[str, str]
) -> None:
    param = "component-code-value-quantity"
    assert found(client, "Observation", **{param: f"{LOINC}|8480-6$120"}) == {pressures["normal"]}
    # 80 is the diastolic value of the same Observation, not the systolic one
    assert found(client, "Observation", **{param: f"{LOINC}|8480-6$80"}) == set()
    assert found(client, "Observation", **{param: f"{LOINC}|8462-4$95"}) == {pressures["high"]}
    # the combo parameter looks at the Observation and its components alike
    combo = "combo-code-value-quantity"
    assert found(client, "Observation", **{combo: "8480-6$150"}) == {pressures["high"]}
    assert found(client, "Observation", **{combo: "29463-7$72.5"}) == {pressures["weight"]}
    assert found(client, "Observation", **{combo: "29463-7$150"}) == set()


def test_quantity_prefixes_and_units_in_the_second_part(
    client: TestClient, pressures: dict[str, str]
) -> None:
    param = "component-code-value-quantity"
    both = {pressures["normal"], pressures["high"]}
    assert found(client, "Observation", **{param: "8480-6$gt100"}) == both
    assert found(client, "Observation", **{param: "8480-6$ge150"}) == {pressures["high"]}
    assert found(client, "Observation", **{param: "8462-4$lt90"}) == {pressures["normal"]}
    assert found(client, "Observation", **{param: "8462-4$le80"}) == {pressures["normal"]}
    assert found(client, "Observation", **{param: f"8480-6$120|{UCUM}|mm[Hg]"}) == {
        pressures["normal"]
    }
    assert found(client, "Observation", **{param: f"8480-6$120|{UCUM}|kg"}) == set()
    assert found(client, "Observation", **{param: "8480-6$120||mmHg"}) == {pressures["normal"]}
    # alternatives (OR) and repeated parameters (AND)
    assert found(client, "Observation", **{param: "8480-6$120,8480-6$150"}) == both
    response = client.get(
        "/fhir/Observation", params=[(param, "8480-6$gt100"), (param, "8462-4$gt90")]
    )
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {pressures["high"]}
    # code-value-quantity reads Observation.value, not the components
    assert found(client, "Observation", **{"code-value-quantity": "8480-6$120"}) == set()
    assert found(client, "Observation", **{"code-value-quantity": f"{LOINC}|29463-7$ap72"}) == {
        pressures["weight"]
    }


def test_the_token_part_takes_system_and_code_forms(
    client: TestClient, pressures: dict[str, str]
) -> None:
    param = "component-code-value-quantity"
    assert found(client, "Observation", **{param: f"{LOINC}|8480-6$120"}) == {pressures["normal"]}
    assert found(client, "Observation", **{param: "8480-6$120"}) == {pressures["normal"]}
    assert found(client, "Observation", **{param: "http://other|8480-6$120"}) == set()
    assert found(client, "Observation", **{param: "|8480-6$120"}) == set()  # no system
    assert found(client, "Observation", **{param: f"{LOINC}|$120"}) == {pressures["normal"]}


def test_token_and_string_and_date_composites(client: TestClient) -> None:
    smoker = post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
            "valueCodeableConcept": {
                "coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]
            },
        },
    )
    note = post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"code": "a$b"}]},  # a `$` in the code itself: escaped as `\$`
            "valueString": "Ärger mit dem Knie",
            "effectiveDateTime": "2021-03-04",
        },
    )
    dated = post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"code": "onset"}]},
            "valueDateTime": "2020-05-06T10:00:00Z",
        },
    )
    concept = "code-value-concept"
    assert found(client, "Observation", **{concept: "72166-2$8517006"}) == {smoker}
    assert found(client, "Observation", **{concept: "72166-2$http://snomed.info/sct|8517006"}) == {
        smoker
    }
    assert found(client, "Observation", **{concept: "72166-2$266919005"}) == set()
    assert found(client, "Observation", **{"code-value-string": "a\\$b$arger"}) == {note}
    assert found(client, "Observation", **{"code-value-string": "a\\$b$knie"}) == set()
    assert found(client, "Observation", **{"code-value-date": "onset$2020-05"}) == {dated}
    assert found(client, "Observation", **{"code-value-date": "onset$gt2021"}) == set()
    assert found(client, "Observation", **{"code-value-date": "onset$lt2021"}) == {dated}


def test_other_resource_types_and_existing_rows(client: TestClient) -> None:
    group = post(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": False,
            "characteristic": [
                {
                    "code": {"coding": [{"code": "gender"}]},
                    "valueCodeableConcept": {"coding": [{"code": "female"}]},
                    "exclude": False,
                },
                {"code": {"coding": [{"code": "smoker"}]}, "valueBoolean": True, "exclude": False},
            ],
        },
    )
    assert found(client, "Group", **{"characteristic-value": "gender$female"}) == {group}
    assert found(client, "Group", **{"characteristic-value": "smoker$true"}) == {group}
    assert found(client, "Group", **{"characteristic-value": "gender$true"}) == set()
    doc = post(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain"}}],
            "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/old"}}],
        },
    )
    relation = "relationship"
    assert found(client, "DocumentReference", **{relation: "DocumentReference/old$replaces"}) == {
        doc
    }
    assert found(client, "DocumentReference", **{relation: "DocumentReference/old$signs"}) == set()
    # an update re-indexes: the old pair no longer matches
    current = client.get(f"/fhir/DocumentReference/{doc}").json()
    current["relatesTo"][0]["code"] = "appends"
    assert client.put(f"/fhir/DocumentReference/{doc}", json=current).status_code == 200
    assert (
        found(client, "DocumentReference", **{relation: "DocumentReference/old$replaces"}) == set()
    )
    assert found(client, "DocumentReference", **{relation: "old$appends"}) == {doc}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("component-code-value-quantity", "8480-6"),  # one component missing
        ("component-code-value-quantity", "8480-6$1$2"),  # one too many
        ("component-code-value-quantity", "8480-6$high"),  # not a quantity
        ("component-code-value-quantity:exact", "8480-6$1"),  # no modifiers on composites
    ],
)
def test_malformed_values_are_refused(client: TestClient, name: str, value: str) -> None:
    response = client.get(
        "/fhir/Observation", params={name: value}, headers={"Prefer": "handling=strict"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_capability_statement_offers_composites(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    offered = {p["name"]: p["type"] for p in observation["searchParam"]}
    for name in (
        "code-value-quantity",
        "component-code-value-quantity",
        "combo-code-value-quantity",
        "code-value-concept",
        "code-value-string",
        "code-value-date",
    ):
        assert offered[name] == "composite"
