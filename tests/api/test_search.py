"""Search over HTTP: parameter types with their FHIR semantics, paging, sorting, includes."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

LOINC = "http://loinc.org"
MRN = "urn:oid:1.2.36.146.595.217.0.1"


def post(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


def search(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


@pytest.fixture
def people(client: TestClient) -> dict[str, dict[str, Any]]:
    return {
        "muller": post(
            client,
            {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": "1001"}],
                "name": [{"family": "Müller", "given": ["Jürgen"]}],
                "gender": "male",
                "birthDate": "1970-03-04",
                "telecom": [
                    {"system": "phone", "value": "555-0101"},
                    {"system": "email", "value": "j@example.org"},
                ],
                "address": [{"city": "Zürich", "postalCode": "8001"}],
            },
        ),
        "smith": post(
            client,
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:other", "value": "1001"}],
                "name": [{"family": "Smith", "given": ["Anna"]}],
                "gender": "female",
                "birthDate": "1985-11",
                "active": True,
            },
        ),
        "smithers": post(
            client,
            {
                "resourceType": "Patient",
                "name": [{"family": "Smithers", "given": ["Waylon"]}],
                "gender": "male",
                "birthDate": "1999",
                "deceasedDateTime": "2020-01-01T10:00:00Z",
            },
        ),
    }


def observation(subject: str, code: str, value: float, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": "Glucose"}],
            "text": "Blood glucose",
        },
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
        **extra,
    }


def test_string_is_case_and_accent_insensitive_prefix(
    client: TestClient, people: dict[str, Any]
) -> None:
    assert ids(search(client, "Patient", name="muller")) == {people["muller"]["id"]}
    assert ids(search(client, "Patient", family="SMITH")) == {
        people["smith"]["id"],
        people["smithers"]["id"],
    }
    assert ids(search(client, "Patient", given="jurg")) == {people["muller"]["id"]}
    assert ids(search(client, "Patient", **{"address-city": "zurich"})) == {people["muller"]["id"]}


def test_string_exact_and_contains(client: TestClient, people: dict[str, Any]) -> None:
    assert ids(search(client, "Patient", **{"family:exact": "Smith"})) == {people["smith"]["id"]}
    assert ids(search(client, "Patient", **{"family:exact": "smith"})) == set()
    assert ids(search(client, "Patient", **{"family:contains": "ither"})) == {
        people["smithers"]["id"]
    }


def test_token_forms(client: TestClient, people: dict[str, Any]) -> None:
    assert ids(search(client, "Patient", identifier="1001")) == {
        people["muller"]["id"],
        people["smith"]["id"],
    }
    assert ids(search(client, "Patient", identifier=f"{MRN}|1001")) == {people["muller"]["id"]}
    assert ids(search(client, "Patient", identifier="urn:other|")) == {people["smith"]["id"]}
    assert ids(search(client, "Patient", identifier="|1001")) == set()
    assert ids(search(client, "Patient", gender="female")) == {people["smith"]["id"]}
    assert ids(search(client, "Patient", **{"gender:not": "male"})) == {people["smith"]["id"]}
    assert ids(search(client, "Patient", phone="555-0101")) == {people["muller"]["id"]}
    assert ids(search(client, "Patient", email="j@example.org")) == {people["muller"]["id"]}
    assert ids(search(client, "Patient", active="true")) == {people["smith"]["id"]}


def test_token_missing(client: TestClient, people: dict[str, Any]) -> None:
    assert ids(search(client, "Patient", **{"identifier:missing": "true"})) == {
        people["smithers"]["id"]
    }
    assert ids(search(client, "Patient", **{"identifier:missing": "false"})) == {
        people["muller"]["id"],
        people["smith"]["id"],
    }


def test_token_text(client: TestClient) -> None:
    obs = post(client, observation("Patient/x", "2339-0", 5.5, "2021-01-01"))
    assert ids(search(client, "Observation", **{"code:text": "blood"})) == {obs["id"]}
    assert ids(search(client, "Observation", **{"code:text": "urine"})) == set()


def test_or_within_a_value_and_across_repeats(client: TestClient, people: dict[str, Any]) -> None:
    both = search(client, "Patient", family="Müller,Smithers")
    assert ids(both) == {people["muller"]["id"], people["smithers"]["id"]}
    response = client.get("/fhir/Patient?family=Smith&gender=male")
    assert ids(response.json()) == {people["smithers"]["id"]}
    response = client.get("/fhir/Patient?birthdate=ge1980&birthdate=lt1990")
    assert ids(response.json()) == {people["smith"]["id"]}


def test_date_prefixes_and_partial_dates(client: TestClient, people: dict[str, Any]) -> None:
    m, s, w = people["muller"]["id"], people["smith"]["id"], people["smithers"]["id"]
    assert ids(search(client, "Patient", birthdate="1970")) == {m}
    assert ids(search(client, "Patient", birthdate="1970-03")) == {m}
    assert (
        ids(search(client, "Patient", birthdate="1985-11-20")) == set()
    )  # month precision not contained in a day
    assert ids(search(client, "Patient", birthdate="1985")) == {s}
    assert ids(search(client, "Patient", birthdate="gt1980")) == {s, w}
    assert ids(search(client, "Patient", birthdate="lt1980")) == {m}
    assert ids(search(client, "Patient", birthdate="ge1985-11")) == {s, w}
    assert ids(search(client, "Patient", birthdate="le1985-11")) == {m, s}
    assert ids(search(client, "Patient", birthdate="ne1970-03-04")) == {s, w}
    assert ids(search(client, "Patient", birthdate="sa1985-12")) == {w}
    assert ids(search(client, "Patient", birthdate="eb1985")) == {m}


def test_date_time_zones(client: TestClient) -> None:
    obs = post(client, observation("Patient/x", "2339-0", 5.5, "2021-06-01T23:30:00-02:00"))
    # 23:30 at UTC-2 is 01:30 UTC on June 2
    assert ids(search(client, "Observation", date="2021-06-02")) == {obs["id"]}
    assert ids(search(client, "Observation", date="gt2021-06-02T01:00:00Z")) == {obs["id"]}
    assert ids(search(client, "Observation", date="lt2021-06-02T01:00:00Z")) == set()


def test_date_against_period(client: TestClient) -> None:
    enc = post(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "period": {"start": "2021-01-10", "end": "2021-01-20"},
        },
    )
    assert ids(search(client, "Encounter", date="2021-01")) == {enc["id"]}
    assert ids(search(client, "Encounter", date="2021-01-15")) == set()  # period not inside one day
    assert ids(search(client, "Encounter", date="ge2021-01-15")) == {enc["id"]}
    assert ids(search(client, "Encounter", date="gt2021-01-25")) == set()


def test_quantity(client: TestClient) -> None:
    low = post(client, observation("Patient/x", "2339-0", 4.2, "2021-01-01"))
    high = post(client, observation("Patient/x", "2339-0", 9.8, "2021-01-01"))
    assert ids(search(client, "Observation", **{"value-quantity": "gt5"})) == {high["id"]}
    assert ids(search(client, "Observation", **{"value-quantity": "le4.2"})) == {low["id"]}
    assert ids(
        search(client, "Observation", **{"value-quantity": "4.2|http://unitsofmeasure.org|mmol/L"})
    ) == {low["id"]}
    assert ids(search(client, "Observation", **{"value-quantity": "4.2||mg/dL"})) == set()
    assert ids(search(client, "Observation", **{"value-quantity": "ap10"})) == {high["id"]}
    assert ids(search(client, "Observation", **{"value-quantity": "4"})) == {
        low["id"]
    }  # 4 means [3.5, 4.5)


def test_reference_forms(client: TestClient, people: dict[str, Any]) -> None:
    pid = people["muller"]["id"]
    obs = post(client, observation(f"Patient/{pid}", "2339-0", 5.0, "2021-01-01"))
    other = post(
        client, observation(f"Patient/{people['smith']['id']}", "2339-0", 5.0, "2021-01-01")
    )
    assert ids(search(client, "Observation", subject=f"Patient/{pid}")) == {obs["id"]}
    assert ids(search(client, "Observation", subject=pid)) == {obs["id"]}
    assert ids(search(client, "Observation", **{"subject:Patient": pid})) == {obs["id"]}
    assert ids(search(client, "Observation", patient=f"http://testserver/fhir/Patient/{pid}")) == {
        obs["id"]
    }
    assert ids(search(client, "Observation", **{"subject:Group": pid})) == set()
    assert other["id"] not in ids(search(client, "Observation", subject=pid))


def test_subject_and_code_search(client: TestClient, people: dict[str, Any]) -> None:
    pid = people["muller"]["id"]
    glucose = post(client, observation(f"Patient/{pid}", "2339-0", 5.0, "2021-01-01"))
    post(client, observation(f"Patient/{pid}", "718-7", 5.0, "2021-01-01"))
    found = search(client, "Observation", subject=f"Patient/{pid}", code=f"{LOINC}|2339-0")
    assert ids(found) == {glucose["id"]}
    assert found["total"] == 1


def test_chaining(client: TestClient, people: dict[str, Any]) -> None:
    obs = post(
        client, observation(f"Patient/{people['muller']['id']}", "2339-0", 5.0, "2021-01-01")
    )
    post(client, observation(f"Patient/{people['smith']['id']}", "2339-0", 5.0, "2021-01-01"))
    found = search(client, "Observation", **{"subject:Patient.identifier": f"{MRN}|1001"})
    assert ids(found) == {obs["id"]}
    assert ids(search(client, "Observation", **{"subject.name": "muller"})) == {obs["id"]}


def test_has(client: TestClient, people: dict[str, Any]) -> None:
    post(client, observation(f"Patient/{people['smith']['id']}", "718-7", 5.0, "2021-01-01"))
    found = search(client, "Patient", **{"_has:Observation:patient:code": "718-7"})
    assert ids(found) == {people["smith"]["id"]}


def test_id_and_last_updated(client: TestClient, people: dict[str, Any]) -> None:
    m = people["muller"]
    assert ids(search(client, "Patient", _id=m["id"])) == {m["id"]}
    assert len(ids(search(client, "Patient", _lastUpdated=f"ge{m['meta']['lastUpdated']}"))) == 3
    assert ids(search(client, "Patient", _lastUpdated="lt2000-01-01")) == set()


def test_tag_profile_security(client: TestClient) -> None:
    tagged = post(
        client,
        {
            "resourceType": "Patient",
            # what US Core requires of the profile it claims (identifier, name, gender)
            "identifier": [{"system": "urn:example", "value": "1"}],
            "name": [{"family": "Tagged"}],
            "gender": "unknown",
            "meta": {
                "tag": [{"system": "urn:source", "code": "lab-feed"}],
                "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "R",
                    }
                ],
            },
        },
    )
    post(client, {"resourceType": "Patient"})
    assert ids(search(client, "Patient", _tag="urn:source|lab-feed")) == {tagged["id"]}
    assert ids(
        search(
            client,
            "Patient",
            _profile="http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
        )
    ) == {tagged["id"]}
    assert ids(search(client, "Patient", _security="R")) == {tagged["id"]}


def test_paging_is_stable_with_absolute_links(client: TestClient) -> None:
    created = [
        post(client, {"resourceType": "Patient", "name": [{"family": f"Page{i:02d}"}]})["id"]
        for i in range(7)
    ]
    first = search(client, "Patient", _count=3, _sort="family")
    assert first["total"] == 7
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert links["self"].startswith("http://testserver/fhir/Patient?")
    seen = [e["resource"]["id"] for e in first["entry"]]
    url = links.get("next")
    while url:
        page = client.get(url.replace("http://testserver", "")).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = {link["relation"]: link["url"] for link in page["link"]}.get("next")
    assert seen == created
    assert "previous" in {link["relation"] for link in page["link"]}


def test_sort_descending_and_multiple_keys(client: TestClient, people: dict[str, Any]) -> None:
    found = search(client, "Patient", _sort="-birthdate")
    assert [e["resource"]["id"] for e in found["entry"]] == [
        people["smithers"]["id"],
        people["smith"]["id"],
        people["muller"]["id"],
    ]
    found = search(client, "Patient", _sort="gender,-family")
    assert [e["resource"]["id"] for e in found["entry"]] == [
        people["smith"]["id"],
        people["smithers"]["id"],
        people["muller"]["id"],
    ]
    newest = search(client, "Patient", _sort="-_lastUpdated")
    assert newest["entry"][0]["resource"]["id"] == people["smithers"]["id"]


def test_include_and_revinclude(client: TestClient, people: dict[str, Any]) -> None:
    pid = people["muller"]["id"]
    obs = post(client, observation(f"Patient/{pid}", "2339-0", 5.0, "2021-01-01"))
    prov = post(
        client,
        {
            "resourceType": "Provenance",
            "target": [{"reference": f"Observation/{obs['id']}"}],
            "recorded": "2021-01-01T00:00:00Z",
            "agent": [{"who": {"display": "lab"}}],
        },
    )
    found = search(
        client, "Observation", _include="Observation:subject", _revinclude="Provenance:target"
    )
    assert ids(found) == {obs["id"]}
    assert ids(found, "include") == {pid, prov["id"]}
    assert found["total"] == 1


def test_summary_count_and_elements_and_total(client: TestClient, people: dict[str, Any]) -> None:
    count = search(client, "Patient", _summary="count")
    assert count["total"] == 3 and "entry" not in count
    slim = search(client, "Patient", _elements="gender", _id=people["muller"]["id"])
    resource = slim["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])
    assert "total" not in search(client, "Patient", _total="none")
    summary = search(client, "Patient", _summary="true", _id=people["muller"]["id"])
    assert "telecom" in summary["entry"][0]["resource"]
    assert "address" in summary["entry"][0]["resource"]


def test_post_search(client: TestClient, people: dict[str, Any]) -> None:
    response = client.post(
        "/fhir/Patient/_search",
        content=b"family=smith&gender=female",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert ids(response.json()) == {people["smith"]["id"]}


def test_unknown_parameter_lenient_and_strict(client: TestClient, people: dict[str, Any]) -> None:
    lenient = search(client, "Patient", nonsense="1")
    assert len(ids(lenient)) == 3
    assert any(e["search"]["mode"] == "outcome" for e in lenient["entry"])
    strict = client.get(
        "/fhir/Patient", params={"nonsense": "1"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "birthdate=notadate",
        "_count=abc",
        "value-quantity=abc",
        "_sort=nonsense",
        "_include=Nope:x",
        "identifier=a|b|c",
    ],
)
def test_bad_search_values_are_400(client: TestClient, query: str) -> None:
    res_type = "Observation" if "quantity" in query else "Patient"
    response = client.get(f"/fhir/{res_type}?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_compartment_and_everything(client: TestClient, people: dict[str, Any]) -> None:
    pid = people["muller"]["id"]
    obs = post(client, observation(f"Patient/{pid}", "2339-0", 5.0, "2021-01-01"))
    cond = post(
        client,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "diabetes"},
        },
    )
    post(client, observation(f"Patient/{people['smith']['id']}", "2339-0", 5.0, "2021-01-01"))
    assert ids(search(client, f"Patient/{pid}/Observation")) == {obs["id"]}
    everything = search(client, f"Patient/{pid}/$everything")
    assert ids(everything) == {pid, obs["id"], cond["id"]}
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
