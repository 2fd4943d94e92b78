"""R4 validation on writes and in `$validate`: required bindings, primitive extensions,
structure, invariants, every problem with its FHIRPath, profiles (US Core, stored ones)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_server.validation import definitions, validate
from fhir_server.validation.invariants import unsupported
from fhir_server.validation.profiles import configure as configure_profiles

FHIR = {"Content-Type": "application/fhir+json"}
US_CORE_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"


def errors(resource: Any, **kw: Any) -> list[tuple[str, str]]:
    return [(i.expression, i.text) for i in validate(resource, **kw) if i.severity == "error"]


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, **extra}


# -- the rule for every required binding -------------------------------------------------------


def _required_code_elements() -> list[tuple[str, str, frozenset[str]]]:
    """(type, element, codes) for every top-level `code` element with a required binding the
    generator expanded, in every resource type."""
    from fhir_server.search.registry import resource_types
    from fhir_server.validation.valuesets import codes_of

    defs = definitions()
    out = []
    for name, d in defs.types.items():
        if d["kind"] != "resource" or d["abstract"] or name not in resource_types():
            continue
        for el, spec in d["nodes"][name].items():
            binding = spec.get("binding")
            if spec.get("types") == ["code"] and binding and binding[0] == "required":
                codes = codes_of(binding[1])
                if codes:
                    out.append((name, el, frozenset().union(*codes.values())))
    return out


def test_every_required_code_binding_refuses_a_code_outside_its_value_set() -> None:
    elements = _required_code_elements()
    assert len(elements) > 150  # status, intent, gender, ... of every resource type
    for res_type, element, codes in elements:
        value = "no-such-code"
        assert value not in codes
        resource: dict[str, Any] = {"resourceType": res_type, element: value}
        if definitions().types[res_type]["nodes"][res_type][element].get("max", 1) != 1:
            resource[element] = [value]
        found = [e for e in errors(resource) if "code-invalid" in e[1] or "value set" in e[1]]
        assert any(expr.startswith(f"{res_type}.{element}") for expr, _ in found), (
            res_type,
            element,
            errors(resource),
        )
        good = sorted(codes)[0]
        resource[element] = [good] if isinstance(resource[element], list) else good
        assert not [e for e in errors(resource) if e[0].startswith(f"{res_type}.{element}")]


@pytest.mark.parametrize(
    ("resource", "where"),
    [
        (observation(status="bogus"), "Observation.status"),
        ({"resourceType": "Patient", "gender": "xyz"}, "Patient.gender"),
        (
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "participant": [{"period": {"start": "2020"}}],
                "statusHistory": [{"status": "gone", "period": {"start": "2020"}}],
            },
            "Encounter.statusHistory[0].status",
        ),
        (
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/1"},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "allergyintolerance-clinical",
                            "code": "gone",
                        }
                    ]
                },
            },
            "AllergyIntolerance.clinicalStatus",
        ),
        (
            {
                "resourceType": "Patient",
                "telecom": [
                    {"system": "pager", "value": "1"},
                    {"system": "carrier-pigeon", "value": "2"},
                ],
            },
            "Patient.telecom[1].system",
        ),
    ],
)
def test_codes_outside_required_value_sets_are_refused(
    resource: dict[str, Any], where: str
) -> None:
    found = errors(resource)
    assert any(expr == where and "value set" in text for expr, text in found), found


# -- primitive extensions, structure, every problem ------------------------------------------------


def test_primitive_extensions_wherever_json_allows_them() -> None:
    translation = {
        "url": "http://hl7.org/fhir/StructureDefinition/translation",
        "extension": [
            {"url": "lang", "valueCode": "nl"},
            {"url": "content", "valueString": "Niet"},
        ],
    }
    patient = {
        "resourceType": "Patient",
        "extension": [
            {"url": "http://example.org/x", "_valueString": {"extension": [translation]}},
            {"url": "http://example.org/y", "valueCode": "a", "_valueCode": {"id": "c1"}},
        ],
        "name": [{"given": [None, "Peter"], "_given": [{"extension": [translation]}, None]}],
        "_birthDate": {"extension": [{"url": "http://example.org/z", "valueBoolean": True}]},
    }
    assert errors(patient) == []
    misaligned = copy.deepcopy(patient)
    misaligned["name"][0]["_given"] = [{"extension": [translation]}]
    assert any(e == "Patient.name[0].given" for e, _ in errors(misaligned))
    both_null = copy.deepcopy(patient)
    both_null["name"][0]["_given"] = [None, None]
    assert any(e.startswith("Patient.name[0].given") for e, _ in errors(both_null))
    wrong_shape = {"resourceType": "Patient", "_gender": "male"}
    assert any(e == "Patient.gender" for e, _ in errors(wrong_shape))


def test_every_problem_is_reported_with_its_path() -> None:
    found = dict(
        errors(
            {
                "resourceType": "Observation",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "x", "userSelected": "yes"}]
                },
                "valueQuantity": {"value": "12"},
                "effectiveDateTime": "2020-13-01",
                "component": [{"code": {"text": "a"}, "valueString": ""}],
                "colour": "red",
                "issued": "2020-01-01",
            }
        )
    )
    assert set(found) >= {
        "Observation.status",
        "Observation.code.coding[0].userSelected",
        "Observation.value.ofType(Quantity).value",
        "Observation.effective.ofType(dateTime)",
        "Observation.component[0].value.ofType(string)",
        "Observation.colour",
        "Observation.issued",
    }, found


def test_numbers_may_be_int_float_or_decimal() -> None:
    for value in (70, 70.5, Decimal("70.50"), Decimal("1E+2")):
        assert errors(observation(valueQuantity={"value": value})) == [], value
    assert (
        errors(
            {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": {"reference": "Patient/1"},
                "prediction": [{"probabilityDecimal": Decimal("0.5")}],
            }
        )
        == []
    )
    assert (
        errors(
            {
                "resourceType": "ImmunizationRecommendation",
                "patient": {"reference": "P/1"},
                "date": "2020",
                "recommendation": [
                    {
                        "targetDisease": {"text": "x"},
                        "forecastStatus": {"text": "due"},
                        "doseNumberPositiveInt": 0,
                    }
                ],
            }
        )
        != []
    )
    assert errors(observation(valueInteger=2**31)) != []
    assert errors(observation(valueInteger=Decimal("2"))) == []
    assert errors(observation(valueInteger=2.5)) != []
    assert errors(observation(valueInteger=True)) != []


def test_literal_references_must_name_a_target_type() -> None:
    wrong = observation(subject={"reference": "Medication/1"})
    assert [e for e, _ in errors(wrong)] == ["Observation.subject.reference"]
    for ok in ("Patient/1", "http://other.org/fhir/Group/2/_history/3", "urn:uuid:1"):
        found = errors(observation(subject={"reference": ok}))
        assert not [e for e, _ in found if e.startswith("Observation.subject")], ok


def test_a_profile_allows_what_its_target_profiles_name() -> None:
    """US Core's MedicationRequest.requester targets us-core-practitioner, us-core-patient,
    ... and the base Device: each profile's type is a valid target, not only Device."""
    url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"
    request = {
        "resourceType": "MedicationRequest",
        "meta": {"profile": [url]},
        "status": "active",
        "intent": "order",
        "reportedBoolean": False,
        "medicationCodeableConcept": {"text": "aspirin"},
        "subject": {"reference": "Patient/p"},
        "authoredOn": "2026-12-03",
    }
    for target in ("Practitioner/d", "PractitionerRole/r", "Organization/o", "Device/x"):
        found = errors({**request, "requester": {"reference": target}})
        assert not [e for e, _ in found if "requester" in e], (target, found)
    # the base definition still limits the types: a Location never requests
    found = errors({**request, "requester": {"reference": "Location/l"}})
    assert [e for e, _ in found if "requester" in e], found


def test_contained_and_bundle_entries_are_validated_by_their_own_type() -> None:
    contained = observation(
        contained=[{"resourceType": "Patient", "id": "p", "gender": "xyz"}],
        subject={"reference": "#p"},
    )
    assert [e for e, _ in errors(contained)] == ["Observation.contained[0].gender"]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": observation(status="bogus")}],
    }
    assert [e for e, _ in errors(bundle)] == ["Bundle.entry[0].resource.status"]


@pytest.mark.parametrize(
    ("resource", "key"),
    [
        (observation(valueString="x", dataAbsentReason={"text": "n/a"}), "obs-6"),
        (
            observation(
                valueString="x",
                component=[{"code": {"coding": [{"code": "a"}]}}],
                code={"coding": [{"code": "a"}]},
            ),
            "obs-7",
        ),
        (observation(subject={"reference": "#nowhere"}), "ref-1"),
        (observation(contained=[{"resourceType": "Patient", "id": "p"}]), "dom-3"),
        (observation(effectivePeriod={"start": "2021-01-02", "end": "2021-01-01"}), "per-1"),
        (observation(valueQuantity={"value": 1, "code": "kg"}), "qty-3"),
        ({"resourceType": "Patient", "extension": [{"url": "http://e.org/x"}]}, "ext-1"),
        (
            {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}},
            "txt-1",
        ),
        ({"resourceType": "Patient", "contact": [{"gender": "male"}]}, "pat-1"),
    ],
)
def test_error_invariants_are_evaluated(resource: dict[str, Any], key: str) -> None:
    texts = [t for _, t in errors(resource)]
    assert any(f"{key}:" in t for t in texts), texts


def test_invariants_no_engine_evaluates_are_listed_not_passed_silently() -> None:
    errors(
        {
            "resourceType": "CareTeam",
            "participant": [
                {
                    "member": {"reference": "Practitioner/1"},
                    "onBehalfOf": {"reference": "Organization/1"},
                }
            ],
        }
    )
    assert "ctm-1" in unsupported()  # resolve(): reported as information by $validate


# -- writes, transactions, both databases --------------------------------------------------------


def test_invalid_codes_are_refused_alone_and_roll_back_transactions(client: TestClient) -> None:
    response = client.post("/fhir/Observation", json=observation(status="bogus"))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Observation.status"] and issue["code"] == "code-invalid"
    response = client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1",
                                                     "gender": "xyz"})  # fmt: skip
    assert response.status_code == 400
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": {"resourceType": "Patient", "gender": "male"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "walking",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "urn:uuid:a"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400, response.text
    issues = response.json()["issue"]
    assert any(i.get("expression") == ["Bundle.entry[1].resource.status"] for i in issues)
    assert client.get("/fhir/Patient").json()["total"] == 0  # the whole transaction rolled back


def test_every_error_of_a_write_is_in_the_outcome(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "gender": "xyz",
            "birthDate": "1990-02-30x",
            "nickname": "P",
        },
    )
    assert response.status_code == 400
    paths = {e for i in response.json()["issue"] for e in i["expression"]}
    assert paths == {"Patient.gender", "Patient.birthDate", "Patient.nickname"}


def test_valid_r4_refused_by_r4b_is_accepted(client: TestClient) -> None:
    """Evidence in R4 has exposureBackground (required) and no variableDefinition (R4B)."""
    evidence = {
        "resourceType": "Evidence",
        "status": "draft",
        "exposureBackground": {"reference": "EvidenceVariable/1"},
    }
    assert client.post("/fhir/Evidence", json=evidence).status_code == 201
    r4b = {
        "resourceType": "Evidence",
        "status": "draft",
        "variableDefinition": [{"variableRole": {"text": "x"}}],
    }
    assert client.post("/fhir/Evidence", json=r4b).status_code == 400


# -- $validate ----------------------------------------------------------------------------------


def _issues(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def test_validate_operation_levels_and_modes(client: TestClient) -> None:
    ok = _issues(client.post("/fhir/Observation/$validate", json=observation()))
    assert [i["severity"] for i in ok] == ["warning"]  # dom-6: no narrative (best practice)
    narrated = observation(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">w</div>'}
    )
    ok = _issues(client.post("/fhir/Observation/$validate", json=narrated))
    assert [i["severity"] for i in ok] == ["information"]
    bad = _issues(
        client.post(
            "/fhir/Observation/$validate",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": observation(status="bogus")},
                    {"name": "mode", "valueCode": "update"},
                ],
            },
        )
    )
    assert {i["expression"][0] for i in bad if i["severity"] == "error"} == {
        "Observation.status",
        "Observation.id",
    }
    # extensible bindings only warn, and only here
    marital = {
        "resourceType": "Patient",
        "maritalStatus": {"coding": [{"system": "http://example.org/ms", "code": "x"}]},
    }
    created = client.post("/fhir/Patient", json=marital)
    assert created.status_code == 201
    pid = created.json()["id"]
    got = _issues(client.get(f"/fhir/Patient/{pid}/$validate"))
    assert all(i["severity"] != "error" for i in got)
    assert _issues(client.post(f"/fhir/Patient/{pid}/$validate?mode=delete"))[0]["severity"] == (
        "information"
    )
    wrong_id = _issues(
        client.post(
            f"/fhir/Patient/{pid}/$validate", json={"resourceType": "Patient", "id": "other"}
        )
    )
    assert any(i["severity"] == "error" for i in wrong_id)
    assert client.post("/fhir/Patient/$validate?mode=nonsense", json=marital).status_code == 400
    assert client.get("/fhir/Patient/nope/$validate").status_code == 404
    assert client.get("/fhir/Patient/nope/$validate").json()["resourceType"] == ("OperationOutcome")
    nothing_stored = client.get("/fhir/Observation").json()["total"]
    assert nothing_stored == 0


def test_validate_is_in_the_capability_statement(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    observation_ops = next(r for r in rest["resource"] if r["type"] == "Observation")["operation"]
    assert {
        "name": "validate",
        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    } in (observation_ops)


# -- profiles -----------------------------------------------------------------------------------


def test_us_core_profile_is_known_out_of_the_box(client: TestClient) -> None:
    claimed = {
        "resourceType": "Patient",
        "meta": {"profile": [US_CORE_PATIENT]},
        "name": [{"family": "Doe"}],
    }
    response = client.post("/fhir/Patient", json=claimed)
    assert response.status_code == 400
    paths = {e for i in response.json()["issue"] for e in i["expression"]}
    assert {"Patient.identifier", "Patient.gender"} <= paths  # 1..* and 1..1 in US Core
    claimed.update(gender="female", identifier=[{"system": "urn:x", "value": "1"}])
    assert client.post("/fhir/Patient", json=claimed).status_code == 201
    # the same resource without the claim is plain R4; $validate can ask for the profile
    plain = {"resourceType": "Patient", "name": [{"family": "Doe"}]}
    assert client.post("/fhir/Patient", json=plain).status_code == 201
    asked = _issues(client.post(f"/fhir/Patient/$validate?profile={US_CORE_PATIENT}", json=plain))
    assert any(i["severity"] == "error" and "profile" in i["diagnostics"] for i in asked)


def test_stored_profile_takes_effect_without_restart(client: TestClient) -> None:
    url = "http://example.org/fhir/StructureDefinition/needs-birthdate"
    claimed = {"resourceType": "Patient", "meta": {"profile": [url]}}
    configure_profiles("refuse")
    try:
        assert client.post("/fhir/Patient", json=claimed).status_code == 400  # unknown
        configure_profiles("warn")
        assert client.post("/fhir/Patient", json=claimed).status_code == 201
        warned = _issues(client.post("/fhir/Patient/$validate", json=claimed))
        assert any(i["severity"] == "warning" and url in i["diagnostics"] for i in warned)
    finally:
        configure_profiles("warn")
    profile = {
        "resourceType": "StructureDefinition",
        "id": "needs-birthdate",
        "url": url,
        "name": "NeedsBirthdate",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "derivation": "constraint",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "differential": {
            "element": [
                {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
                {
                    "id": "Patient.gender",
                    "path": "Patient.gender",
                    "min": 1,
                    "binding": {"strength": "required", "valueSet": "http://example.org/vs/fm"},
                },
            ]
        },
    }
    value_set = {
        "resourceType": "ValueSet",
        "id": "fm",
        "url": "http://example.org/vs/fm",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": "http://hl7.org/fhir/administrative-gender",
                    "concept": [{"code": "female"}, {"code": "male"}],
                }
            ]
        },
    }
    assert client.put("/fhir/ValueSet/fm", json=value_set).status_code == 201
    assert client.put("/fhir/StructureDefinition/needs-birthdate", json=profile).status_code == 201
    response = client.post("/fhir/Patient", json={**claimed, "gender": "other"})
    assert response.status_code == 400
    paths = {e for i in response.json()["issue"] for e in i["expression"]}
    assert paths == {"Patient.birthDate", "Patient.gender"}, response.text
    ok = {**claimed, "gender": "female", "birthDate": "1970"}
    assert client.post("/fhir/Patient", json=ok).status_code == 201
    # relaxed again: the change is seen at once
    profile["differential"]["element"] = profile["differential"]["element"][1:]
    assert client.put("/fhir/StructureDefinition/needs-birthdate", json=profile).status_code == 200
    assert client.post("/fhir/Patient", json={**claimed, "gender": "male"}).status_code == 201


def test_profile_slices_are_counted() -> None:
    """US Core blood pressure slices `component` by code (systolic, diastolic: 1..1 each) and
    `category` by coding (vital-signs 1..1)."""
    url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"

    def component(code: str) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": 120, "unit": "mmHg", "system":
                                  "http://unitsofmeasure.org", "code": "mm[Hg]"}}  # fmt: skip

    bp = {
        "resourceType": "Observation", "meta": {"profile": [url]}, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/1"}, "effectiveDateTime": "2020-01-01",
        "component": [component("8480-6"), component("8462-4")],
    }  # fmt: skip
    slice_errors = [t for _, t in errors(bp) if "slice" in t]
    assert slice_errors == []
    no_diastolic = {**bp, "component": [component("8480-6"), component("8480-6")]}
    texts = [t for _, t in errors(no_diastolic) if "slice" in t]
    assert any("'diastolic'" in t for t in texts) and any("'systolic'" in t for t in texts)
    no_category = {**bp, "category": [{"text": "vitals"}]}
    assert any("'VSCat'" in t for _, t in errors(no_category))
    three = {**bp, "component": [*bp["component"], component("8462-4")]}
    expected = "Observation.component: slice 'diastolic' allows at most 1 item(s); found 2"
    assert expected in [t.split(" (profile")[0] for _, t in errors(three)]
    # a member meets its slice: systolic's value is a Quantity in mm[Hg] (US Core fixes it)
    wrong = copy.deepcopy(bp)
    wrong["component"][0]["valueQuantity"]["code"] = "kPa"
    wrong["component"][1] = {**component("8462-4"), "valueString": "80"}
    del wrong["component"][1]["valueQuantity"]
    found = {e: t for e, t in errors(wrong) if "slice" in t}
    assert set(found) == {"Observation.component[0].value.code",
                          "Observation.component[1].value.ofType(String)"}, found  # fmt: skip
    assert "'systolic'" in found["Observation.component[0].value.code"]


def test_checkers_compile_safely_from_concurrent_requests() -> None:
    """The first requests of a process compile the checkers from several threads at once; a
    recursive type (Questionnaire.item) is never used half-built."""
    import threading

    from fhir_server.validation.checker import Compiled, Run

    fresh = Compiled(definitions())
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string"}]}],
    }
    failures: list[str] = []

    def work() -> None:
        try:
            for res in (questionnaire, observation(), {"resourceType": "Patient"}):
                run = Run(resource=res, root=res)
                fresh.type_check(res["resourceType"])(res, res["resourceType"], run)
                failures.extend(i.text for i in run.issues if i.severity == "error")
        except Exception as exc:  # noqa: BLE001 - any failure of a thread is the finding
            failures.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_bindings_to_value_sets_only_the_terminology_service_knows(client: TestClient) -> None:
    """A stored profile binds Observation.interpretation (required) to the HL7 v2 table 0078
    value set, which only the terminology service holds: its codes pass, others are refused."""
    url = "http://example.org/fhir/StructureDefinition/v2-flags"
    profile = {
        "resourceType": "StructureDefinition", "id": "v2-flags", "url": url, "name": "V2Flags",
        "status": "active", "kind": "resource", "abstract": False, "type": "Observation",
        "derivation": "constraint",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
        "differential": {"element": [{
            "id": "Observation.interpretation", "path": "Observation.interpretation",
            "binding": {"strength": "required",
                        "valueSet": "http://terminology.hl7.org/ValueSet/v2-0078"}}]},
    }  # fmt: skip
    assert client.put("/fhir/StructureDefinition/v2-flags", json=profile).status_code == 201

    def flagged(code: str) -> dict[str, Any]:
        return observation(
            meta={"profile": [url]},
            interpretation=[
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": code}
                    ]
                }
            ],
        )

    assert client.post("/fhir/Observation", json=flagged("H")).status_code == 201
    refused = client.post("/fhir/Observation", json=flagged("NOT-A-FLAG"))
    assert refused.status_code == 400, refused.text
    assert refused.json()["issue"][0]["expression"] == ["Observation.interpretation[0]"]
