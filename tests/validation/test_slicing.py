"""Profile slicing: a resource claiming a profile is judged per slice, whatever tells the
slices apart (value, pattern, exists, type, profile discriminators, and a required binding):
a missing required slice is an error, each slice's cardinality holds, a member meets what its
slice requires (an Extension slice: the extension's own profile), every problem with its
FHIRPath. US Core 5.0.1 as carried, and hand-made profiles stored like an operator's."""

from __future__ import annotations

import copy
from typing import Any

from profile_support import (
    US_CORE,
    US_CORE_PATIENT,
    constraint,
    omb,
    race,
    slicing,
    store_and_post,
)
from starlette.testclient import TestClient

from fhir_server.validation import validate


def errors(resource: Any) -> list[tuple[str, str]]:
    return [(i.expression, i.text) for i in validate(resource) if i.severity == "error"]


def test_us_core_patient_example_is_valid() -> None:
    assert errors(US_CORE_PATIENT) == []


def test_us_core_race_is_judged_by_its_own_profile() -> None:
    """Patient.extension:race (told by url) must conform to us-core-race: its `text` slice
    is 1..1, `ombCategory` at most 5, each sub-extension needs its value."""
    patient = copy.deepcopy(US_CORE_PATIENT)
    patient["extension"][0] = race(omb("2106-3", "White"))  # no text
    found = errors(patient)
    assert any(e == "Patient.extension[0].extension" and "slice 'text'" in t
               and "us-core-race" in t for e, t in found), found  # fmt: skip
    patient["extension"][0] = race(*[omb("2106-3", "White")] * 6,
                                   {"url": "text", "valueString": "x"})  # fmt: skip
    assert any("slice 'ombCategory' allows at most 5" in t for _, t in errors(patient))
    patient["extension"][0] = race({"url": "text"})  # a text without its value
    found = errors(patient)
    assert any(e == "Patient.extension[0].extension[0].value" for e, _ in found), found
    # twice: the slice race is 0..1
    patient["extension"] = [race({"url": "text", "valueString": "a"}),
                            race({"url": "text", "valueString": "b"})]  # fmt: skip
    assert any("slice 'race' allows at most 1" in t for _, t in errors(patient))
    # the same extension on a Patient that claims no profile is not judged by US Core
    plain = {**patient, "meta": {}}
    assert [t for _, t in errors(plain) if "slice" in t] == []


# -- hand-made profiles, stored as an operator stores them (differential only) -------------------


def test_type_discriminator_on_a_choice(client: TestClient) -> None:
    """Observation.value[x] sliced by type: the Quantity slice is 1..1."""
    profile = constraint("needs-quantity", "Observation", [
        slicing("Observation.value[x]", "type", "$this", "closed"),
        {"id": "Observation.value[x]:valueQuantity", "path": "Observation.value[x]",
         "sliceName": "valueQuantity", "min": 1, "max": "1", "type": [{"code": "Quantity"}]},
    ])  # fmt: skip
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
    status, issues = store_and_post(client, profile, {**obs, "valueString": "heavy"})
    assert status == 400
    assert [
        (i["expression"], "slice 'valueQuantity' needs at least 1" in i["diagnostics"])
        for i in issues
    ] == [
        (["Observation.value"], True),  # and, the slicing being
        (["Observation.value.ofType(String)"], False),
    ]  # closed:
    assert "matches none of the slices (valueQuantity)" in issues[1]["diagnostics"]
    status, _ = store_and_post(client, profile, {**obs, "valueQuantity": {"value": 70}})
    assert status == 201


def test_closed_slicing_refuses_what_no_slice_takes(client: TestClient) -> None:
    """Observation.category sliced (closed) by pattern: only the vital-signs category."""
    vital = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "vital-signs"}]}  # fmt: skip
    profile = constraint("vitals-only", "Observation", [
        slicing("Observation.category", "pattern", "$this", "closed"),
        {"id": "Observation.category:vs", "path": "Observation.category", "sliceName": "vs",
         "min": 1, "max": "1", "patternCodeableConcept": vital},
    ])  # fmt: skip
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    lab = {"coding": [{"system": vital["coding"][0]["system"], "code": "laboratory"}]}
    status, issues = store_and_post(client, profile, {**obs, "category": [vital, lab]})
    assert status == 400
    assert [i["expression"] for i in issues] == [["Observation.category[1]"]], issues
    assert "the slicing is closed" in issues[0]["diagnostics"]
    assert store_and_post(client, profile, {**obs, "category": [vital]})[0] == 201


def test_exists_discriminator(client: TestClient) -> None:
    """Patient.contact sliced by whether it names an organization: exactly one contact with
    one (the employer, 1..1), at most one without (0..1)."""
    profile = constraint("one-employer", "Patient", [
        slicing("Patient.contact", "exists", "organization"),
        {"id": "Patient.contact:employer", "path": "Patient.contact", "sliceName": "employer",
         "min": 1, "max": "1"},
        {"id": "Patient.contact:employer.organization", "path": "Patient.contact.organization",
         "min": 1},
        {"id": "Patient.contact:person", "path": "Patient.contact", "sliceName": "person",
         "min": 0, "max": "1"},
        {"id": "Patient.contact:person.organization", "path": "Patient.contact.organization",
         "max": "0"},
    ])  # fmt: skip
    org = {"organization": {"reference": "Organization/1"}}
    person = {"name": {"family": "Doe"}}
    status, issues = store_and_post(client, profile, {"resourceType": "Patient",
                                                       "contact": [person]})  # fmt: skip
    assert status == 400 and ["slice 'employer' needs at least 1" in i["diagnostics"]
                              for i in issues] == [True]  # fmt: skip
    assert issues[0]["expression"] == ["Patient.contact"]
    three = {"resourceType": "Patient", "contact": [person, person, org]}
    status, issues = store_and_post(client, profile, three)
    assert status == 400 and any("slice 'person' allows at most 1" in i["diagnostics"]
                                 for i in issues)  # fmt: skip
    status, _ = store_and_post(client, profile, {"resourceType": "Patient",
                                                  "contact": [org, person]})  # fmt: skip
    assert status == 201


def test_profile_discriminator_on_bundle_entries(client: TestClient) -> None:
    """A document-like Bundle profile: one entry whose resource conforms to US Core Patient
    (told by profile), any other entries; a Patient that does not conform is no member."""
    profile = constraint("has-us-core-patient", "Bundle", [
        slicing("Bundle.entry", "profile", "resource"),
        {"id": "Bundle.entry:patient", "path": "Bundle.entry", "sliceName": "patient",
         "min": 1, "max": "1"},
        {"id": "Bundle.entry:patient.resource", "path": "Bundle.entry.resource",
         "type": [{"code": "Patient", "profile": [US_CORE + "us-core-patient"]}]},
    ])  # fmt: skip
    conforming = {k: v for k, v in US_CORE_PATIENT.items() if k != "meta"}
    bare = {"resourceType": "Patient", "name": [{"family": "Doe"}]}

    def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection",
                "entry": [{"fullUrl": f"urn:uuid:0000000{i}-0000-4000-8000-000000000000",
                           "resource": r} for i, r in enumerate(resources)]}  # fmt: skip

    status, issues = store_and_post(client, profile, bundle(bare))
    assert status == 400
    assert [(i["expression"], "slice 'patient' needs at least 1" in i["diagnostics"])
            for i in issues] == [(["Bundle.entry"], True)]  # fmt: skip
    status, _ = store_and_post(client, profile, bundle(bare, conforming))
    assert status == 201
    status, issues = store_and_post(client, profile, bundle(conforming, conforming))
    assert status == 400 and "slice 'patient' allows at most 1" in issues[0]["diagnostics"]


def test_type_discriminator_on_resources_and_the_members_rules(client: TestClient) -> None:
    """Bundle.entry sliced by the type of `resource`: a Patient entry 1..1 whose fullUrl is
    required; the member without its fullUrl is named by its own path."""
    profile = constraint("patient-first", "Bundle", [
        slicing("Bundle.entry", "type", "resource"),
        {"id": "Bundle.entry:patient", "path": "Bundle.entry", "sliceName": "patient",
         "min": 1, "max": "1"},
        {"id": "Bundle.entry:patient.fullUrl", "path": "Bundle.entry.fullUrl", "min": 1},
        {"id": "Bundle.entry:patient.resource", "path": "Bundle.entry.resource",
         "type": [{"code": "Patient"}]},
    ])  # fmt: skip
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    only_obs = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs}]}
    status, issues = store_and_post(client, profile, only_obs)
    assert status == 400 and "slice 'patient' needs at least 1" in issues[0]["diagnostics"]
    no_url = {**only_obs, "entry": [{"resource": obs},
                                    {"resource": {"resourceType": "Patient"}}]}  # fmt: skip
    status, issues = store_and_post(client, profile, no_url)
    assert status == 400
    assert [i["expression"] for i in issues] == [["Bundle.entry[1].fullUrl"]], issues
    assert "slice 'patient'" in issues[0]["diagnostics"]
    fine = copy.deepcopy(no_url)
    fine["entry"][1]["fullUrl"] = "urn:uuid:00000001-0000-4000-8000-000000000000"
    assert store_and_post(client, profile, fine)[0] == 201


def test_slices_no_discriminator_can_tell_are_named_by_validate(client: TestClient) -> None:
    """A discriminator path through a function other than resolve(), ofType() and
    extension() is not evaluated: accepted, and `$validate` warns that the slice was not
    checked (rather than passing it silently)."""
    profile = constraint("loinc-codes", "Observation", [
        slicing("Observation.code.coding", "value", "code.where(system = 'http://loinc.org')"),
        {"id": "Observation.code.coding:loinc", "path": "Observation.code.coding",
         "sliceName": "loinc", "min": 1, "max": "1"},
    ])  # fmt: skip
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    status, _ = store_and_post(client, profile, obs)
    assert status == 201
    claimed = {**obs, "meta": {"profile": [profile["url"]]}}
    outcome = client.post("/fhir/Observation/$validate", json=claimed).json()
    assert any(i["severity"] == "warning" and "slice 'loinc' is not checked" in i["diagnostics"]
               for i in outcome["issue"]), outcome  # fmt: skip
