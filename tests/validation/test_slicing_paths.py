"""Slicing discriminators through resolve(), ofType() and extension('url'), and slices inside
slices (re-slices `a:b/c`, a slicing of a slice's children, a slicing inside a data type), over
HTTP: a write claiming the profile and `$validate` with the `profile` parameter.

What resolve() reaches: a contained resource, an entry of the Bundle being validated, a
resource stored here (as the writing transaction sees it); anything else is not guessed at:
the item is neither counted nor refused, and `$validate` warns."""

from __future__ import annotations

import copy
from typing import Any

from profile_support import (
    BASE,
    US_CORE,
    US_CORE_PATIENT,
    constraint,
    diagnostics,
    element,
    slicing,
    store,
    store_and_post,
    validate_against,
)
from starlette.testclient import TestClient

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def _performer_profile() -> dict[str, Any]:
    """Observation.performer sliced by the type of what it references: exactly one
    Practitioner, at most one Organization."""
    return constraint("performer-kinds", "Observation", [
        slicing("Observation.performer", "type", "resolve()"),
        element("Observation.performer:doctor", min=1, max="1",
                type=[{"code": "Reference", "targetProfile": [BASE + "Practitioner"]}]),
        element("Observation.performer:org", min=0, max="1",
                type=[{"code": "Reference", "targetProfile": [BASE + "Organization"]}]),
    ])  # fmt: skip


def _contained(*resources: dict[str, Any], refs: list[str]) -> dict[str, Any]:
    return {**OBS, "contained": list(resources),
            "performer": [{"reference": r} for r in refs]}  # fmt: skip


def test_resolve_type_through_contained_resources(client: TestClient) -> None:
    profile = _performer_profile()
    doctor = {"resourceType": "Practitioner", "id": "d"}
    org = {"resourceType": "Organization", "id": "o", "name": "Lab"}
    ok = _contained(doctor, org, refs=["#d", "#o"])
    assert store_and_post(client, profile, ok)[0] == 201
    assert diagnostics(validate_against(client, profile["url"], ok)) == []
    only_org = _contained(org, refs=["#o"])
    status, issues = store_and_post(client, profile, only_org)
    assert status == 400
    assert [(i["expression"], "slice 'doctor' needs at least 1" in i["diagnostics"])
            for i in issues] == [(["Observation.performer"], True)]  # fmt: skip
    issues = validate_against(client, profile["url"], only_org)
    assert any("slice 'doctor' needs at least 1" in d for d in diagnostics(issues))
    two = _contained(doctor, {**doctor, "id": "e"}, refs=["#d", "#e"])
    status, issues = store_and_post(client, profile, two)
    assert status == 400 and "slice 'doctor' allows at most 1" in issues[0]["diagnostics"]


def test_resolve_type_through_stored_resources(client: TestClient) -> None:
    """`Practitioner/id` resolves to what is stored (the write's own transaction); a
    reference to nothing stored, or elsewhere, is not judged: accepted, with a warning."""
    profile = _performer_profile()
    store(client, profile)
    for stored_one in (
        {"resourceType": "Practitioner", "id": "slice-doc"},
        {"resourceType": "Organization", "id": "slice-org", "name": "Lab"},
    ):
        url = f"/fhir/{stored_one['resourceType']}/{stored_one['id']}"
        assert client.put(url, json=stored_one).status_code in (200, 201)
    stored = {**OBS, "performer": [{"reference": "Practitioner/slice-doc"}]}
    assert store_and_post(client, profile, stored)[0] == 201
    as_org = {**OBS, "performer": [{"reference": "Organization/slice-org"},
                                   {"reference": "Organization/slice-org"}]}  # fmt: skip
    status, issues = store_and_post(client, profile, as_org)
    assert status == 400
    assert sorted(d.split(" matching")[0].split(" (profile")[0] for d in diagnostics(issues)) == [
        "Observation.performer: slice 'doctor' needs at least 1 item(s)",
        "Observation.performer: slice 'org' allows at most 1 item(s); found 2",
    ]
    for ref in ("Practitioner/not-stored-here", "http://elsewhere.example/fhir/Practitioner/1"):
        unknown = {**OBS, "performer": [{"reference": ref}]}
        assert store_and_post(client, profile, unknown)[0] == 201
        issues = validate_against(client, profile["url"], unknown)
        assert diagnostics(issues) == []
        warned = diagnostics(issues, "warning")
        assert any("whether this is in slice 'doctor' is not judged" in w for w in warned)
        assert any("slice 'doctor' needs at least 1" in w and "1 not judged" in w
                   for w in warned), warned  # fmt: skip
    # once the Practitioner exists, the same reference resolves
    assert client.put("/fhir/Practitioner/not-stored-here", json={
        "resourceType": "Practitioner", "id": "not-stored-here"}).status_code == 201  # fmt: skip
    later = {**OBS, "performer": [{"reference": "Practitioner/not-stored-here"}]}
    warned = diagnostics(validate_against(client, profile["url"], later), "warning")
    assert [w for w in warned if "slice" in w] == []


def test_resolve_inside_the_bundle_being_validated(client: TestClient) -> None:
    """A Bundle profile wants one Observation entry conforming to performer-kinds: its
    performer (urn:uuid) resolves to another entry of the same Bundle."""
    store(client, _performer_profile())
    bundle_profile = constraint("obs-bundle", "Bundle", [
        slicing("Bundle.entry", "profile", "resource"),
        element("Bundle.entry:obs", min=1, max="1"),
        element("Bundle.entry:obs.resource", type=[{"code": "Observation", "profile": [
            "http://example.org/fhir/StructureDefinition/performer-kinds"]}]),
    ])  # fmt: skip
    who = "urn:uuid:7c3a1a44-5a3f-4a43-9d5e-2b0f3d1e6a01"
    performers = {"Practitioner": {"resourceType": "Practitioner"},
                  "Organization": {"resourceType": "Organization", "name": "Lab"}}  # fmt: skip

    def bundle(performer_type: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:7c3a1a44-5a3f-4a43-9d5e-2b0f3d1e6a00",
             "resource": {**OBS, "performer": [{"reference": who}]}},
            {"fullUrl": who, "resource": performers[performer_type]}]}  # fmt: skip

    assert store_and_post(client, bundle_profile, bundle("Practitioner"))[0] == 201
    assert diagnostics(validate_against(client, bundle_profile["url"],
                                        bundle("Practitioner"))) == []  # fmt: skip
    status, issues = store_and_post(client, bundle_profile, bundle("Organization"))
    assert status == 400
    assert [(i["expression"], "slice 'obs' needs at least 1" in i["diagnostics"])
            for i in issues] == [(["Bundle.entry"], True)]  # fmt: skip


def test_resolve_profile_of_the_target(client: TestClient) -> None:
    """List.entry sliced by the profile of the resource `item` references: one entry must be
    a Patient conforming to US Core Patient (a contained one here)."""
    profile = constraint("us-core-patient-list", "List", [
        slicing("List.entry", "profile", "item.resolve()"),
        element("List.entry:patient", min=1, max="1"),
        element("List.entry:patient.item", type=[{"code": "Reference", "targetProfile": [
            US_CORE + "us-core-patient"]}]),
    ])  # fmt: skip
    conforming = {**{k: v for k, v in US_CORE_PATIENT.items() if k != "meta"}, "id": "p"}
    bare = {"resourceType": "Patient", "id": "q", "name": [{"family": "Doe"}]}

    def listing(*patients: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "List", "status": "current", "mode": "snapshot",
                "contained": list(patients),
                "entry": [{"item": {"reference": f"#{p['id']}"}} for p in patients]}  # fmt: skip

    assert store_and_post(client, profile, listing(bare, conforming))[0] == 201
    status, issues = store_and_post(client, profile, listing(bare))
    assert status == 400 and "slice 'patient' needs at least 1" in issues[0]["diagnostics"]
    issues = validate_against(client, profile["url"], listing(bare))
    assert any("slice 'patient' needs at least 1" in d for d in diagnostics(issues))


def test_resolve_value_fixed_by_the_target_profile(client: TestClient) -> None:
    """DiagnosticReport.result sliced by pattern on `resolve().code`: the slice's target
    profile (stored, an HDL Observation) fixes the code the referenced Observation has."""
    hdl_code = {"coding": [{"system": LOINC, "code": "2085-9"}]}
    store(client, constraint("hdl", "Observation", [
        element("Observation.code", patternCodeableConcept=hdl_code)]))  # fmt: skip
    profile = constraint("lipids", "DiagnosticReport", [
        slicing("DiagnosticReport.result", "pattern", "resolve().code"),
        element("DiagnosticReport.result:hdl", min=1, max="1", type=[{
            "code": "Reference",
            "targetProfile": ["http://example.org/fhir/StructureDefinition/hdl"]}]),
    ])  # fmt: skip

    def report(code: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "lipids"},
                "contained": [{**OBS, "id": "r", "code": code}],
                "result": [{"reference": "#r"}]}  # fmt: skip

    with_hdl = report({"coding": [{"system": LOINC, "code": "2085-9", "display": "HDL"}]})
    assert store_and_post(client, profile, with_hdl)[0] == 201
    ldl = report({"coding": [{"system": LOINC, "code": "18262-6"}]})
    status, issues = store_and_post(client, profile, ldl)
    assert status == 400 and "slice 'hdl' needs at least 1" in issues[0]["diagnostics"]
    assert any("slice 'hdl' needs at least 1" in d
               for d in diagnostics(validate_against(client, profile["url"], ldl)))  # fmt: skip


def test_of_type_discriminator(client: TestClient) -> None:
    """Observation.component sliced by pattern on `value.ofType(CodeableConcept)`: a
    component whose coded value is 'present' is 1..1; a string value is no member."""
    present = {"coding": [{"system": SCT, "code": "52101004"}]}
    profile = constraint("finding-present", "Observation", [
        slicing("Observation.component", "pattern", "value.ofType(CodeableConcept)"),
        element("Observation.component:present", min=1, max="1"),
        element("Observation.component:present.value[x]",
                type=[{"code": "CodeableConcept"}], patternCodeableConcept=present),
    ])  # fmt: skip

    def obs(*values: dict[str, Any]) -> dict[str, Any]:
        return {**OBS, "component": [{"code": {"text": "c"}, **v} for v in values]}

    coded = {"valueCodeableConcept": {"coding": [{"system": SCT, "code": "52101004",
                                                  "display": "Present"}]}}  # fmt: skip
    assert store_and_post(client, profile, obs({"valueString": "x"}, coded))[0] == 201
    status, issues = store_and_post(client, profile, obs({"valueString": "52101004"}))
    assert status == 400 and "slice 'present' needs at least 1" in issues[0]["diagnostics"]
    status, issues = store_and_post(client, profile, obs(coded, coded))
    assert status == 400 and "slice 'present' allows at most 1" in issues[0]["diagnostics"]
    assert any("slice 'present' allows at most 1" in d for d in diagnostics(
        validate_against(client, profile["url"], obs(coded, coded))))  # fmt: skip


def test_extension_discriminator(client: TestClient) -> None:
    """Observation.component sliced by the value of its extension('.../component-kind'): a
    'primary' component is 1..1 and needs a Quantity value; the extension slice inside the
    component slice names the URL and fixes the value."""
    kind = "http://example.org/fhir/StructureDefinition/component-kind"
    profile = constraint("primary-component", "Observation", [
        slicing("Observation.component", "value", f"extension('{kind}').value"),
        element("Observation.component:primary", min=1, max="1"),
        slicing("Observation.component:primary.extension", "value", "url"),
        element("Observation.component:primary.extension:kind", min=1, max="1",
                type=[{"code": "Extension", "profile": [kind]}]),
        element("Observation.component:primary.extension:kind.value[x]",
                type=[{"code": "code"}], fixedCode="primary"),
        element("Observation.component:primary.value[x]", min=1,
                type=[{"code": "Quantity"}]),
    ])  # fmt: skip

    def component(which: str | None, **value: Any) -> dict[str, Any]:
        ext = [{"url": kind, "valueCode": which}] if which else []
        return {"code": {"text": "c"}, **({"extension": ext} if ext else {}), **value}

    qty = {"valueQuantity": {"value": 1}}
    fine = {**OBS, "component": [component("secondary", valueString="s"),
                                 component("primary", **qty)]}  # fmt: skip
    assert store_and_post(client, profile, fine)[0] == 201
    assert diagnostics(validate_against(client, profile["url"], fine)) == []
    status, issues = store_and_post(client, profile, {**OBS, "component": [
        component("secondary", **qty), component(None, **qty)]})  # fmt: skip
    assert status == 400 and "slice 'primary' needs at least 1" in issues[0]["diagnostics"]
    wrong_type = {**OBS, "component": [component("primary", valueString="s")]}
    status, issues = store_and_post(client, profile, wrong_type)
    assert status == 400
    assert [i["expression"] for i in issues] == [
        ["Observation.component[0].value.ofType(String)"]
    ], issues
    assert "slice 'primary'" in issues[0]["diagnostics"]


def _mrn_profile() -> dict[str, Any]:
    """Patient.identifier sliced by type (MR: 1..*), the MR slice re-sliced (closed) by
    system: one hospital MRN, at most one clinic MRN, no other MR."""
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                      "code": "MR"}]}  # fmt: skip
    return constraint("two-mrns", "Patient", [
        slicing("Patient.identifier", "pattern", "type"),
        element("Patient.identifier:mrn", min=1, max="*",
                **slicing("Patient.identifier:mrn", "value", "system", "closed")),
        element("Patient.identifier:mrn.type", min=1, patternCodeableConcept=mr),
        element("Patient.identifier:mrn/hospital", min=1, max="1"),
        element("Patient.identifier:mrn/hospital.system", fixedUri="http://hospital.example"),
        element("Patient.identifier:mrn/hospital.value", min=1),
        element("Patient.identifier:mrn/clinic", min=0, max="1"),
        element("Patient.identifier:mrn/clinic.system", fixedUri="http://clinic.example"),
    ])  # fmt: skip


def _mrn(system: str, value: str | None = "1") -> dict[str, Any]:
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    return {"type": mr, "system": system, **({"value": value} if value else {})}


def test_re_slices(client: TestClient) -> None:
    profile = _mrn_profile()
    other = {"system": "http://ssn.example", "value": "9"}
    patient = {"resourceType": "Patient", "identifier": [
        other, _mrn("http://hospital.example"), _mrn("http://clinic.example")]}  # fmt: skip
    assert store_and_post(client, profile, patient)[0] == 201
    assert diagnostics(validate_against(client, profile["url"], patient)) == []
    # an MR without the hospital one; a third MR system (the re-slicing is closed; the
    # identifier of another type is no MR, not judged by it)
    bad = {"resourceType": "Patient", "identifier": [
        other, _mrn("http://clinic.example"), _mrn("http://elsewhere.example")]}  # fmt: skip
    status, issues = store_and_post(client, profile, bad)
    assert status == 400
    assert [(i["expression"], i["diagnostics"].split(" matching")[0].split(";")[0])
            for i in issues] == [
        (["Patient.identifier"], "Patient.identifier: slice 'mrn/hospital' needs at least 1 "
                                 "item(s)"),
        (["Patient.identifier[2]"], "Patient.identifier[2]: matches none of the slices "
                                    "(mrn/hospital, mrn/clinic)"),
    ]  # fmt: skip
    # the re-slice's own rules: a hospital MRN needs its value; two clinic MRNs
    bad = {"resourceType": "Patient", "identifier": [
        _mrn("http://hospital.example", None), _mrn("http://clinic.example"),
        _mrn("http://clinic.example")]}  # fmt: skip
    found = diagnostics(validate_against(client, profile["url"], bad))
    assert any("value is required (slice 'mrn/hospital')" in d for d in found), found
    assert any("slice 'mrn/clinic' allows at most 1" in d for d in found), found


def test_slicing_inside_a_slice_and_inside_a_data_type(client: TestClient) -> None:
    """Observation.component sliced by code; inside the systolic slice, its code.coding is
    sliced (closed) by system: one LOINC coding, nothing else. And Observation.code.coding
    (inside a data type of the profile's own element) sliced: one LOINC coding needed."""
    systolic = {"coding": [{"system": LOINC, "code": "8480-6"}]}
    profile = constraint("systolic-loinc", "Observation", [
        slicing("Observation.code.coding", "value", "system"),
        element("Observation.code.coding:loinc", min=1, max="1"),
        element("Observation.code.coding:loinc.system", fixedUri=LOINC),
        slicing("Observation.component", "pattern", "code"),
        element("Observation.component:systolic", min=1, max="1"),
        element("Observation.component:systolic.code", patternCodeableConcept=systolic),
        slicing("Observation.component:systolic.code.coding", "value", "system", "closed"),
        element("Observation.component:systolic.code.coding:loinc", min=1, max="1"),
        element("Observation.component:systolic.code.coding:loinc.system", fixedUri=LOINC),
    ])  # fmt: skip
    code = {"coding": [{"system": LOINC, "code": "85354-9"}]}
    fine = {**OBS, "code": code, "component": [{"code": copy.deepcopy(systolic),
                                                "valueQuantity": {"value": 120}}]}  # fmt: skip
    assert store_and_post(client, profile, fine)[0] == 201
    extra = copy.deepcopy(fine)
    extra["component"][0]["code"]["coding"].append({"system": SCT, "code": "271649006"})
    status, issues = store_and_post(client, profile, extra)
    assert status == 400
    assert [i["expression"] for i in issues] == [["Observation.component[0].code.coding[1]"]], (
        issues
    )
    assert "the slicing is closed" in issues[0]["diagnostics"]
    twice = copy.deepcopy(fine)
    twice["component"][0]["code"]["coding"].append(systolic["coding"][0])
    status, issues = store_and_post(client, profile, twice)
    assert status == 400 and "slice 'loinc' allows at most 1" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Observation.component[0].code.coding"]
    no_loinc = {**fine, "code": {"coding": [{"system": SCT, "code": "271649006"}]}}
    issues = validate_against(client, profile["url"], no_loinc)
    assert [(i["expression"], "slice 'loinc' needs at least 1" in i["diagnostics"])
            for i in issues if i["severity"] == "error"] == [
        (["Observation.code.coding"], True)]  # fmt: skip


def test_resolve_within_a_transaction(client: TestClient) -> None:
    """A transaction creating a Practitioner and an Observation claiming performer-kinds
    that references it by urn:uuid: the reference resolves to what the transaction wrote."""
    profile = _performer_profile()
    store(client, profile)
    who = "urn:uuid:9d1f3c2a-1b2c-4d3e-8f40-5a6b7c8d9e01"

    def transaction(performer: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": who, "resource": performer,
             "request": {"method": "POST", "url": performer["resourceType"]}},
            {"resource": {**OBS, "meta": {"profile": [profile["url"]]},
                          "performer": [{"reference": who}]},
             "request": {"method": "POST", "url": "Observation"}}]}  # fmt: skip

    response = client.post("/fhir", json=transaction({"resourceType": "Practitioner"}))
    assert response.status_code == 200, response.text
    response = client.post("/fhir", json=transaction({"resourceType": "Organization",
                                                      "name": "Lab"}))  # fmt: skip
    assert response.status_code == 400, response.text
    assert "slice 'doctor' needs at least 1" in response.text


def test_of_type_into_a_type_slice(client: TestClient) -> None:
    """`value.ofType(Quantity).code`: the value the slice's type slice (value[x]:valueQuantity)
    fixes on its code; a component in other units, or with a string value, is no member."""
    profile = constraint("mmhg-component", "Observation", [
        slicing("Observation.component", "value", "value.ofType(Quantity).code"),
        element("Observation.component:mmhg", min=1, max="1"),
        element("Observation.component:mmhg.value[x]",
                **slicing("Observation.component:mmhg.value[x]", "type", "$this")),
        element("Observation.component:mmhg.value[x]:valueQuantity", min=1, max="1",
                type=[{"code": "Quantity"}]),
        element("Observation.component:mmhg.value[x]:valueQuantity.code", fixedCode="mm[Hg]"),
    ])  # fmt: skip

    def obs(*values: dict[str, Any]) -> dict[str, Any]:
        return {**OBS, "component": [{"code": {"text": "c"}, **v} for v in values]}

    ucum = "http://unitsofmeasure.org"
    mmhg = {"valueQuantity": {"value": 120, "system": ucum, "code": "mm[Hg]"}}
    kpa = {"valueQuantity": {"value": 16, "system": ucum, "code": "kPa"}}
    assert store_and_post(client, profile, obs(kpa, mmhg))[0] == 201
    status, issues = store_and_post(client, profile, obs(kpa, {"valueString": "mm[Hg]"}))
    assert status == 400 and "slice 'mmhg' needs at least 1" in issues[0]["diagnostics"]
