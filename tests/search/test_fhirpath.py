"""FHIRPath subset: the shapes the standard R4 search expressions use, on plain JSON."""

from typing import Any

import pytest

from fhir_server.search.fhirpath import (
    UnsupportedExpression,
    compile_path,
    evaluate,
    reference_type,
)
from fhir_server.search.registry import params_for

MAIN_TYPES = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Encounter", "Observation",
    "DiagnosticReport", "ServiceRequest", "Specimen", "ImagingStudy", "Condition",
    "AllergyIntolerance", "MedicationRequest", "Procedure", "Immunization", "DocumentReference",
    "Device", "Endpoint", "Provenance", "AuditEvent", "Task", "MessageHeader",
)  # fmt: skip

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"tag": [{"system": "s", "code": "t"}]},
    "name": [
        {"family": "Chalmers", "given": ["Peter", "James"]},
        {"given": ["Jim"]},
    ],
    "telecom": [
        {"system": "phone", "value": "555-1"},
        {"system": "email", "value": "p@x.org"},
        {"system": "phone", "value": "555-2"},
    ],
    "birthDate": "1974-12-25",
    "generalPractitioner": [
        {"reference": "Practitioner/dr"},
        {"reference": "Organization/o1"},
        {"reference": "http://other/fhir/Practitioner/dr2/_history/3"},
    ],
}

OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 7.2, "code": "mmol/L"},
    "effectivePeriod": {"start": "2020-01-01"},
    "component": [
        {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
        {"code": {"text": "b"}, "valueString": "x"},
        {"code": {"text": "c"}, "valueCodeableConcept": {"text": "cc"}},
    ],
}


@pytest.mark.parametrize(
    ("expression", "resource", "expected"),
    [
        ("Patient.birthDate", PATIENT, ["1974-12-25"]),
        ("Patient.name.given", PATIENT, ["Peter", "James", "Jim"]),
        ("Patient.name.family", PATIENT, ["Chalmers"]),
        ("Patient.missing.deeper", PATIENT, []),
        ("Patient.meta.tag.code", PATIENT, ["t"]),
        ("Resource.id", PATIENT, ["p1"]),
        ("Patient.telecom.where(system='phone').value", PATIENT, ["555-1", "555-2"]),
        ("Patient.telecom.where(system='email')", PATIENT,
         [{"system": "email", "value": "p@x.org"}]),
        ("Patient.telecom.where(system='fax')", PATIENT, []),
        ("Patient.generalPractitioner.where(resolve() is Practitioner).reference", PATIENT,
         ["Practitioner/dr", "http://other/fhir/Practitioner/dr2/_history/3"]),
        ("Patient.generalPractitioner.where(resolve() is Organization).reference", PATIENT,
         ["Organization/o1"]),
        ("Patient.name.family | Patient.name.given", PATIENT,
         ["Chalmers", "Peter", "James", "Jim"]),
        ("Patient.name.given | Patient.name.given", PATIENT, ["Peter", "James", "Jim"]),
        ("Patient.name[0].given", PATIENT, ["Peter", "James"]),
        ("Patient.name[1].given", PATIENT, ["Jim"]),
        ("Observation.value.ofType(Quantity).value", OBS, [7.2]),
        ("(Observation.value as Quantity).code", OBS, ["mmol/L"]),
        ("Observation.value.ofType(string)", OBS, []),
        ("Observation.value", OBS, [{"value": 7.2, "code": "mmol/L"}]),  # bare choice
        ("Observation.effective", OBS, [{"start": "2020-01-01"}]),
        ("Observation.component.value.ofType(Quantity).value", OBS, [1]),
        ("(Observation.value.ofType(string)) | (Observation.component.value.ofType(string))",
         OBS, ["x"]),
        ("(Observation.component.value.ofType(CodeableConcept)).text", OBS, ["cc"]),
        ("Observation.subject.where(resolve() is Patient)", OBS, [{"reference": "Patient/p1"}]),
        ("Observation.subject.where(resolve() is Group)", OBS, []),
        ("Observation.component.where(code.text = 'b').value.ofType(string)", OBS, ["x"]),
        ("Patient.name.exists()", PATIENT, [True]),
        ("Patient.photo.exists()", PATIENT, [False]),
    ],
)  # fmt: skip
def test_evaluate(expression: str, resource: dict[str, Any], expected: list[Any]) -> None:
    assert evaluate(expression, resource) == expected


DECEASED = "Patient.deceased.exists() and Patient.deceased != false"


@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        ({"resourceType": "Patient"}, [False]),
        ({"resourceType": "Patient", "deceasedBoolean": False}, [False]),
        ({"resourceType": "Patient", "deceasedBoolean": True}, [True]),
        ({"resourceType": "Patient", "deceasedDateTime": "2020-02-02"}, [True]),
    ],
)
def test_deceased_special(patient: dict[str, Any], expected: list[Any]) -> None:
    assert evaluate(DECEASED, patient) == expected


def test_condition_onset_of_type() -> None:
    expr = params_for("Condition")["onset-date"].expression
    assert evaluate(expr, {"resourceType": "Condition", "onsetDateTime": "2021-05"}) == ["2021-05"]
    period = {"start": "2021", "end": "2022"}
    assert evaluate(expr, {"resourceType": "Condition", "onsetPeriod": period}) == [period]
    assert evaluate(expr, {"resourceType": "Condition", "onsetString": "childhood"}) == []


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"reference": "Patient/1"}, "Patient"),
        ({"reference": "Patient/1/_history/2"}, "Patient"),
        ({"reference": "https://h/fhir/Group/9"}, "Group"),
        ({"reference": "#contained"}, None),
        ({"reference": "urn:uuid:1234"}, None),
        ({"type": "Device", "identifier": {"value": "x"}}, "Device"),
        ("Patient/1", None),
    ],
)
def test_reference_type(ref: Any, expected: str | None) -> None:
    assert reference_type(ref) == expected


def test_compile_is_cached() -> None:
    assert compile_path("Patient.name") is compile_path("Patient.name")


@pytest.mark.parametrize(
    "expression",
    ["", "Patient.name.substring(1)", "Patient.extension('http://x')", "Patient.name +", "a ~ b"],
)
def test_unsupported(expression: str) -> None:
    with pytest.raises(UnsupportedExpression):
        compile_path(expression)


@pytest.mark.parametrize("res_type", MAIN_TYPES)
def test_every_expression_of_main_types_compiles(res_type: str) -> None:
    params = params_for(res_type)
    assert len(params) > 6
    for param in params.values():
        fn = compile_path(param.expression)
        assert isinstance(fn({"resourceType": res_type}), list)


def test_only_expressionless_params_are_unsupported() -> None:
    import json
    from importlib import resources

    text = resources.files("fhir_server.search").joinpath("data", "search_parameters.json")
    table = json.loads(text.read_text("utf-8"))
    unsupported = []
    for res_type, params in table.items():
        if res_type == "_source":
            continue
        for code, item in params.items():
            try:
                compile_path(item["expression"])
            except UnsupportedExpression:
                unsupported.append(f"{res_type}.{code}")
    assert sorted(unsupported) == ["Resource._content", "Resource._query", "Resource._text"]
