"""The Python API other code asks (the validator's required bindings, the HL7 mapper)."""

from __future__ import annotations

from fhir_server.terminology import Terminology, V2Vocabulary

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
V2 = "http://terminology.hl7.org/CodeSystem/v2-"

svc = Terminology()  # the specification's content only (no database)


def test_contains_answers_true_false_or_cannot_tell() -> None:
    assert svc.contains(GENDER_VS, GENDER, "female") is True
    assert svc.contains(GENDER_VS + "|4.0.1", GENDER, "female") is True
    assert svc.contains(GENDER_VS, GENDER, "xyz") is False
    assert svc.contains(GENDER_VS, "http://other", "female") is False
    assert svc.contains(GENDER_VS, None, "male") is True
    status = "http://hl7.org/fhir/ValueSet/observation-status"
    assert svc.contains(status, "http://hl7.org/fhir/observation-status", "bogus") is False
    # SNOMED CT is not held: undecidable, never a false "no"
    findings = "http://hl7.org/fhir/ValueSet/clinical-findings"
    assert svc.contains(findings, "http://snomed.info/sct", "22298006") is None
    assert svc.contains("http://example.org/unknown", GENDER, "male") is None
    assert svc.contains("http://terminology.hl7.org/ValueSet/v2-0203", V2 + "0203", "MR")


def test_codes_lists_a_whole_value_set_or_none() -> None:
    assert svc.codes(GENDER_VS) == {GENDER: frozenset({"male", "female", "other", "unknown"})}
    assert svc.codes("http://hl7.org/fhir/ValueSet/clinical-findings") is None


def test_v2_vocabulary_translates_and_names_codes() -> None:
    vocab = V2Vocabulary(svc)
    status = "http://hl7.org/fhir/observation-status"
    assert vocab.translate(V2 + "0085", "F", status) == "final"
    assert vocab.translate(V2 + "0085", "C", status) == "corrected"
    assert vocab.translate(V2 + "0085", "??", status) is None
    report = "http://hl7.org/fhir/diagnostic-report-status"
    assert vocab.translate(V2 + "0123", "P", report) == "preliminary"
    assert vocab.translate(V2 + "0001", "F", GENDER) == "female"
    interp = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    assert vocab.translate(V2 + "0078", "HH", interp) == "HH"
    assert vocab.translate(V2 + "0078", "HM", interp) is None  # stays a v2-0078 code
    assert vocab.display(V2 + "0203", "MR") == "Medical record number"
    assert vocab.display(V2 + "0203", "nope") is None
