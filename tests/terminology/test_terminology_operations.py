"""The terminology operations over HTTP: the value sets the server itself uses, the HL7 v2
tables, a stored hierarchical CodeSystem with a filtered ValueSet, paging, ConceptMaps, and an
operator's changes taking effect at once (also for the HL7 v2 mapper)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
OBS_STATUS_VS = "http://hl7.org/fhir/ValueSet/observation-status"
OBS_STATUS = "http://hl7.org/fhir/observation-status"
V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V2VS = "http://terminology.hl7.org/ValueSet/v2-"
ANIMALS = "http://example.org/fhir/CodeSystem/animals"


def param(body: dict[str, Any], name: str) -> Any:
    for p in body["parameter"]:
        if p["name"] == name:
            return next(v for k, v in p.items() if k.startswith("value"))
    return None


def codes(body: dict[str, Any]) -> list[str]:
    assert body["resourceType"] == "ValueSet", body
    return [c["code"] for c in body["expansion"].get("contains", [])]


def validate(client: TestClient, url: str, system: str | None, code: str) -> dict[str, Any]:
    query = {"url": url, "code": code, **({"system": system} if system else {})}
    response = client.get("/fhir/ValueSet/$validate-code", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_expand_the_value_sets_the_server_uses(client: TestClient) -> None:
    gender = client.get("/fhir/ValueSet/$expand", params={"url": GENDER_VS}).json()
    assert sorted(codes(gender)) == ["female", "male", "other", "unknown"]
    assert gender["expansion"]["total"] == 4
    assert {c["system"] for c in gender["expansion"]["contains"]} == {GENDER}
    by_id = client.get("/fhir/ValueSet/observation-status/$expand").json()
    assert set(codes(by_id)) == {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
    flags = client.get("/fhir/ValueSet/$expand", params={"url": V2VS + "0078"}).json()
    assert {"H", "L", "HH", "LL", "N", "A"} <= set(codes(flags))
    status = client.post(
        "/fhir/ValueSet/$expand",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "url", "valueUri": V2VS + "0085"},
                {"name": "filter", "valueString": "final"},
            ],
        },
    ).json()
    assert "F" in codes(status) and "P" not in codes(status)


def test_expand_pages_with_count_and_offset(client: TestClient) -> None:
    def page(offset: int) -> dict[str, Any]:
        query = {"url": V2VS + "0203", "count": "50", "offset": str(offset)}
        body: dict[str, Any] = client.get("/fhir/ValueSet/$expand", params=query).json()
        return body

    first, second, last = page(0), page(50), page(100)
    total = first["expansion"]["total"]
    assert total > 100 and second["expansion"]["total"] == total
    everything = codes(first) + codes(second) + codes(last)
    assert len(codes(first)) == 50 and len(codes(last)) == total - 100
    assert len(set(everything)) == total and "MR" in everything
    assert second["expansion"]["offset"] == 50
    bad = client.get("/fhir/ValueSet/$expand", params={"url": V2VS + "0203", "count": "-1"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_validate_code_for_required_bindings_and_v2_tables(client: TestClient) -> None:
    assert param(validate(client, OBS_STATUS_VS, OBS_STATUS, "final"), "result") is True
    refused = validate(client, OBS_STATUS_VS, OBS_STATUS, "bogus")
    assert param(refused, "result") is False and "bogus" in param(refused, "message")
    assert param(validate(client, GENDER_VS, GENDER, "xyz"), "result") is False
    assert param(validate(client, GENDER_VS, GENDER, "female"), "result") is True
    assert param(validate(client, GENDER_VS, None, "male"), "result") is True
    assert param(validate(client, GENDER_VS, OBS_STATUS, "final"), "result") is False
    mrn = validate(client, V2VS + "0203", V2 + "0203", "MR")
    assert param(mrn, "result") is True and param(mrn, "display") == "Medical record number"
    assert param(validate(client, V2VS + "0078", V2 + "0078", "HH"), "result") is True
    assert param(validate(client, V2VS + "0085", V2 + "0085", "F"), "result") is True
    assert param(validate(client, V2VS + "0085", V2 + "0085", "ZZ"), "result") is False
    posted = client.post(
        "/fhir/ValueSet/administrative-gender/$validate-code",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "codeableConcept",
                    "valueCodeableConcept": {
                        "coding": [
                            {"system": "http://other.example", "code": "M"},
                            {"system": GENDER, "code": "male", "display": "Male"},
                        ]
                    },
                }
            ],
        },
    )
    assert posted.status_code == 200 and param(posted.json(), "result") is True
    unknown = client.get(
        "/fhir/ValueSet/$validate-code", params={"url": "http://x/none", "code": "a"}
    )
    assert unknown.status_code == 404


def test_lookup_v2_and_fhir_codes(client: TestClient) -> None:
    mr = client.get("/fhir/CodeSystem/$lookup", params={"system": V2 + "0203", "code": "MR"})
    assert mr.status_code == 200 and param(mr.json(), "display") == "Medical record number"
    flag = client.get("/fhir/CodeSystem/$lookup", params={"system": V2 + "0078", "code": "H"})
    assert "high" in param(flag.json(), "display").lower()
    final = client.post(
        "/fhir/CodeSystem/$lookup",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "coding", "valueCoding": {"system": OBS_STATUS, "code": "final"}}
            ],
        },
    )
    assert param(final.json(), "display") == "Final"
    missing = client.get("/fhir/CodeSystem/$lookup", params={"system": GENDER, "code": "x"})
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    nowhere = client.get("/fhir/CodeSystem/$lookup", params={"system": "http://x", "code": "x"})
    assert nowhere.status_code == 404


def test_translate_with_spec_and_v2_concept_maps(client: TestClient) -> None:
    spec = client.get(
        "/fhir/ConceptMap/$translate",
        params={
            "url": "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2",
            "system": GENDER,
            "code": "female",
        },
    ).json()
    assert param(spec, "result") is True
    (match,) = [p for p in spec["parameter"] if p["name"] == "match"]
    concept = next(p["valueCoding"] for p in match["part"] if p["name"] == "concept")
    assert concept == {"system": V2 + "0001", "code": "F"}
    back = client.get(
        "/fhir/ConceptMap/cm-administrative-gender-v2/$translate",
        params={"system": V2 + "0001", "code": "M", "reverse": "true"},
    ).json()
    assert param(back, "result") is True and '"male"' in str(back).replace("'", '"')
    v2 = client.get(
        "/fhir/ConceptMap/$translate",
        params={"system": V2 + "0085", "code": "C", "targetsystem": OBS_STATUS},
    ).json()
    assert param(v2, "result") is True and "corrected" in str(v2)
    none = client.get(
        "/fhir/ConceptMap/$translate",
        params={"system": V2 + "0085", "code": "ZZ", "targetsystem": OBS_STATUS},
    ).json()
    assert param(none, "result") is False


def _animals(*, with_bird: bool = True) -> dict[str, Any]:
    birds = (
        [{"code": "bird", "display": "Bird", "concept": [{"code": "parrot", "display": "Parrot"}]}]
        if with_bird
        else []
    )
    return {
        "resourceType": "CodeSystem",
        "id": "animals",
        "url": ANIMALS,
        "status": "active",
        "content": "complete",
        "hierarchyMeaning": "is-a",
        "caseSensitive": True,
        "concept": [
            {
                "code": "animal",
                "display": "Animal",
                "concept": [
                    {
                        "code": "mammal",
                        "display": "Mammal",
                        "concept": [
                            {"code": "dog", "display": "Dog"},
                            {"code": "cat", "display": "Cat"},
                            {"code": "bat", "display": "Bat"},
                        ],
                    },
                    *birds,
                ],
            },
            {"code": "rock", "display": "Rock"},
        ],
    }


@pytest.fixture
def animals(client: TestClient) -> TestClient:
    assert client.put("/fhir/CodeSystem/animals", json=_animals()).status_code == 201
    pets = {
        "resourceType": "ValueSet",
        "id": "pets",
        "url": "http://example.org/fhir/ValueSet/pets",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": ANIMALS,
                    "filter": [{"property": "concept", "op": "is-a", "value": "animal"}],
                }
            ],
            "exclude": [
                {"system": ANIMALS, "concept": [{"code": "bat"}]},
                {
                    "system": ANIMALS,
                    "filter": [{"property": "concept", "op": "descendent-of", "value": "bird"}],
                },
            ],
        },
    }
    assert client.put("/fhir/ValueSet/pets", json=pets).status_code == 201
    mammals = {
        "resourceType": "ValueSet",
        "id": "pet-mammals",
        "status": "active",
        "url": "http://example.org/fhir/ValueSet/pet-mammals",
        "compose": {
            "include": [
                {
                    "system": ANIMALS,
                    "filter": [{"property": "concept", "op": "is-a", "value": "mammal"}],
                    "valueSet": ["http://example.org/fhir/ValueSet/pets"],
                }
            ]
        },
    }
    assert client.put("/fhir/ValueSet/pet-mammals", json=mammals).status_code == 201
    return client


def test_filtered_value_set_over_a_stored_hierarchy(animals: TestClient) -> None:
    pets = animals.get("/fhir/ValueSet/pets/$expand").json()
    assert sorted(codes(pets)) == ["animal", "bird", "cat", "dog", "mammal"]
    imported = animals.get("/fhir/ValueSet/pet-mammals/$expand").json()
    assert sorted(codes(imported)) == ["cat", "dog", "mammal"]  # is-a mammal AND in pets
    url = "http://example.org/fhir/ValueSet/pets"
    assert param(validate(animals, url, ANIMALS, "dog"), "result") is True
    assert param(validate(animals, url, ANIMALS, "bat"), "result") is False  # excluded
    assert param(validate(animals, url, ANIMALS, "parrot"), "result") is False
    assert param(validate(animals, url, ANIMALS, "rock"), "result") is False
    adhoc = animals.post(
        "/fhir/ValueSet/$expand",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "valueSet",
                    "resource": {
                        "resourceType": "ValueSet",
                        "status": "active",
                        "compose": {
                            "include": [
                                {
                                    "system": ANIMALS,
                                    "filter": [
                                        {"property": "code", "op": "regex", "value": "[bc]at"}
                                    ],
                                },
                                {
                                    "system": ANIMALS,
                                    "filter": [{"property": "concept", "op": "=", "value": "rock"}],
                                },
                            ]
                        },
                    },
                }
            ],
        },
    ).json()
    assert sorted(codes(adhoc)) == ["bat", "cat", "rock"]
    not_a = animals.post(
        "/fhir/ValueSet/$expand",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "valueSet",
                    "resource": {
                        "resourceType": "ValueSet",
                        "status": "active",
                        "compose": {
                            "include": [
                                {
                                    "system": ANIMALS,
                                    "filter": [
                                        {"property": "concept", "op": "is-not-a", "value": "mammal"}
                                    ],
                                }
                            ]
                        },
                    },
                }
            ],
        },
    ).json()
    assert sorted(codes(not_a)) == ["animal", "bird", "parrot", "rock"]


def test_subsumes_and_lookup_on_the_hierarchy(animals: TestClient) -> None:
    def outcome(a: str, b: str) -> str:
        query = {"system": ANIMALS, "codeA": a, "codeB": b}
        body = animals.get("/fhir/CodeSystem/$subsumes", params=query).json()
        return str(param(body, "outcome"))

    assert outcome("animal", "dog") == "subsumes"
    assert outcome("dog", "mammal") == "subsumed-by"
    assert outcome("dog", "dog") == "equivalent"
    assert outcome("dog", "rock") == "not-subsumed"
    by_id = animals.get(
        "/fhir/CodeSystem/animals/$subsumes", params={"codeA": "bird", "codeB": "parrot"}
    )
    assert param(by_id.json(), "outcome") == "subsumes"
    unknown = animals.get(
        "/fhir/CodeSystem/$subsumes", params={"system": ANIMALS, "codeA": "x", "codeB": "dog"}
    )
    assert unknown.status_code == 400
    looked = animals.get(
        "/fhir/CodeSystem/$lookup", params={"system": ANIMALS, "code": "mammal"}
    ).json()
    props = [
        (p["part"][0]["valueCode"], p["part"][1]["valueCode"])
        for p in looked["parameter"]
        if p["name"] == "property"
    ]
    assert ("parent", "animal") in props and ("child", "dog") in props


def test_an_operators_change_takes_effect_at_once(animals: TestClient) -> None:
    before = codes(animals.get("/fhir/ValueSet/pets/$expand").json())
    assert "bird" in before
    assert animals.put("/fhir/CodeSystem/animals", json=_animals(with_bird=False)).is_success
    after = codes(animals.get("/fhir/ValueSet/pets/$expand").json())
    assert "bird" not in after and "dog" in after
    assert animals.delete("/fhir/ValueSet/pets").status_code in (200, 204)
    gone = animals.get(
        "/fhir/ValueSet/$expand", params={"url": "http://example.org/fhir/ValueSet/pets"}
    )
    assert gone.status_code == 404


def test_the_hl7_mapper_translates_through_the_service(client: TestClient) -> None:
    def oru(ctrl: str, status: str) -> bytes:
        return (
            f"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1\r"
            "PID|1||77^^^HOSP^MR||Doe^John||19700101|M\r"
            f"OBR|1||FILL1|24331-1^Lipid panel^LN|||20240101110000|||||||||||||||||{status}\r"
            f"OBX|1|NM|2093-3^Cholesterol^LN||250.50|mg/dL|<200|HH|||{status}\r"
        ).encode()

    assert b"MSA|AA" in client.post("/hl7/messages", content=oru("T1", "F")).content
    (obs,) = [
        e["resource"]
        for e in client.get("/fhir/Observation", params={"code": "2093-3"}).json()["entry"]
    ]
    assert obs["status"] == "final"
    assert obs["valueQuantity"]["value"] == 250.5
    stored = client.get(f"/fhir/Observation/{obs['id']}").content
    assert b'"value":250.50' in stored  # OBX-5 "250.50" keeps its precision
    assert obs["interpretation"][0]["coding"][0]["code"] == "HH"
    patient = client.get("/fhir/Patient").json()["entry"][0]["resource"]
    assert patient["identifier"][0]["type"]["coding"][0]["display"] == "Medical record number"
    assert patient["gender"] == "male"
    # an operator overrides the built-in 0085 map: OBX-11 "F" now means "amended"
    override = client.get(
        "/fhir/ConceptMap/$translate",
        params={"system": V2 + "0085", "code": "F", "targetsystem": OBS_STATUS},
    ).json()
    source = next(
        p["valueUri"]
        for m in override["parameter"]
        if m["name"] == "match"
        for p in m["part"]
        if p["name"] == "source"
    )
    stored = {
        "resourceType": "ConceptMap",
        "id": "local-0085",
        "url": source,
        "status": "active",
        "group": [
            {
                "source": V2 + "0085",
                "target": OBS_STATUS,
                "element": [
                    {"code": "F", "target": [{"code": "amended", "equivalence": "equivalent"}]}
                ],
            }
        ],
    }
    assert client.put("/fhir/ConceptMap/local-0085", json=stored).status_code == 201
    assert b"MSA|AA" in client.post("/hl7/messages", content=oru("T2", "F")).content
    (obs,) = [
        e["resource"]
        for e in client.get("/fhir/Observation", params={"code": "2093-3"}).json()["entry"]
    ]
    assert obs["status"] == "amended"


def test_capability_statement_declares_the_operations(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    declared = {
        (t, o["name"], o["definition"])
        for t in ("ValueSet", "CodeSystem", "ConceptMap")
        for o in by_type[t].get("operation", [])
    }
    spec = "http://hl7.org/fhir/OperationDefinition/"
    assert {
        ("ValueSet", "expand", spec + "ValueSet-expand"),
        ("ValueSet", "validate-code", spec + "ValueSet-validate-code"),
        ("CodeSystem", "lookup", spec + "CodeSystem-lookup"),
        ("CodeSystem", "subsumes", spec + "CodeSystem-subsumes"),
        ("ConceptMap", "translate", spec + "ConceptMap-translate"),
    } <= declared


def test_bad_requests_get_an_operation_outcome(client: TestClient) -> None:
    for path, params in (
        ("/fhir/ValueSet/$expand", {}),
        ("/fhir/ValueSet/$validate-code", {"url": GENDER_VS}),
        ("/fhir/CodeSystem/$lookup", {"system": GENDER}),
        ("/fhir/CodeSystem/$subsumes", {"system": GENDER, "codeA": "male"}),
        ("/fhir/ConceptMap/$translate", {}),
        ("/fhir/ValueSet/$expand", {"url": GENDER_VS, "activeOnly": "perhaps"}),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    posted = client.post("/fhir/ValueSet/$expand", json={"resourceType": "Patient"})
    assert posted.status_code == 400
    snomed = client.get(
        "/fhir/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/clinical-findings"}
    )
    assert snomed.status_code == 422
    assert "snomed" in snomed.json()["issue"][0]["diagnostics"].lower()


def test_another_process_sees_a_stored_change(animals: TestClient, app: Any) -> None:
    """A second service on the same database (another worker) notices the operator's change
    through its stamp query, without a restart or an in-process signal."""
    from fhir_server.terminology import Terminology

    other = Terminology(app.state.store.engine, recheck_seconds=0)
    url = "http://example.org/fhir/ValueSet/pets"
    assert other.contains(url, ANIMALS, "bird") is True
    assert animals.put("/fhir/CodeSystem/animals", json=_animals(with_bird=False)).is_success
    assert other.contains(url, ANIMALS, "bird") is False
    assert animals.delete("/fhir/ValueSet/pets").status_code in (200, 204)
    assert other.contains(url, ANIMALS, "dog") is None  # the value set is gone


def test_lookups_answered_from_memory_skip_the_thread_hop(client: TestClient) -> None:
    """`$validate-code`, `$lookup` and `$subsumes` by GET at type level run on the event loop
    once the service holds its content (router.inline); anything that may be large or read the
    database (an expansion, a POSTed ValueSet, a write) keeps to a thread. Same answers."""
    from fhir_server.api.context import FhirRequest
    from fhir_server.api.router import inline

    ctx = client.app.state.context  # type: ignore[attr-defined]
    query = [("url", "http://hl7.org/fhir/ValueSet/observation-status"),
             ("system", "http://hl7.org/fhir/observation-status"), ("code", "final")]  # fmt: skip
    path = "/fhir/ValueSet/$validate-code"
    first = client.get(path, params=query)  # loads the service's content
    assert first.status_code == 200 and first.json()["parameter"][0]["valueBoolean"] is True

    def runs_inline(method: str, url: str) -> bool:
        return inline(ctx, FhirRequest(method, url.split("/")[2:], query))

    assert runs_inline("GET", path)
    assert runs_inline("GET", "/fhir/CodeSystem/$lookup")
    assert not runs_inline("POST", path)
    assert not runs_inline("GET", "/fhir/ValueSet/$expand")
    assert not runs_inline("GET", "/fhir/ValueSet/observation-status")
    assert not runs_inline("PUT", "/fhir/ValueSet/x")
    # a stored ValueSet is seen at once: the change makes the service reload (on a thread)
    stored = {"resourceType": "ValueSet", "id": "mine", "url": "http://example.org/vs/mine",
              "status": "active", "compose": {"include": [{"system": "http://hl7.org/fhir/"
              "observation-status", "concept": [{"code": "final"}]}]}}  # fmt: skip
    assert client.put("/fhir/ValueSet/mine", json=stored).status_code == 201
    assert not runs_inline("GET", path)
    mine = client.get(path, params=[("url", "http://example.org/vs/mine"), *query[1:]])
    assert mine.json()["parameter"][0]["valueBoolean"] is True
    assert runs_inline("GET", path)
    bogus = client.get(path, params=[*query[:2], ("code", "bogus")])
    assert bogus.json()["parameter"][0]["valueBoolean"] is False
