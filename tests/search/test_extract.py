"""Index extraction: the rows each parameter kind produces, per the R4 search rules."""

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server.search.extract import (
    MAX_QTY,
    MAX_US,
    MIN_US,
    date_range,
    extract,
    normalize_string,
    split_reference,
)


def us(text: str) -> int:
    """Epoch microseconds of an ISO timestamp (naive = UTC), computed independently."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", "2020-01-01T00:00:00", "2021-01-01T00:00:00"),
        ("2020-02", "2020-02-01T00:00:00", "2020-03-01T00:00:00"),
        ("2020-12", "2020-12-01T00:00:00", "2021-01-01T00:00:00"),
        ("2020-03-04", "2020-03-04T00:00:00", "2020-03-05T00:00:00"),
        ("2020-03-04T10:00", "2020-03-04T10:00:00", "2020-03-04T10:01:00"),
        ("2020-03-04T10:00:00", "2020-03-04T10:00:00", "2020-03-04T10:00:01"),
        ("2020-03-04T10:00:00Z", "2020-03-04T10:00:00", "2020-03-04T10:00:01"),
        ("2020-03-04T10:00:00+02:00", "2020-03-04T08:00:00", "2020-03-04T08:00:01"),
        ("2020-03-04T01:00:00-05:30", "2020-03-04T06:30:00", "2020-03-04T06:30:01"),
        ("2020-03-04T10:00:00.5Z", "2020-03-04T10:00:00.500000", "2020-03-04T10:00:00.600000"),
        ("2020-03-04T10:00:00.123+00:00", "2020-03-04T10:00:00.123000",
         "2020-03-04T10:00:00.124000"),
        ("1969-07-20", "1969-07-20T00:00:00", "1969-07-21T00:00:00"),
        ("9999", "9999-01-01T00:00:00", None),
    ],
)  # fmt: skip
def test_date_range(value: str, low: str, high: str | None) -> None:
    lo, hi = date_range(value)
    assert lo == us(low)
    if high is not None:
        assert hi == us(high)
    assert lo < hi


@pytest.mark.parametrize(
    "junk", ["", "20", "2020-13", "2020-02-30", "2020-01-01T25:00:00", "yesterday", "2020/01/01",
             "2020-01-01T10:00:00+99:00", "0000"]
)  # fmt: skip
def test_date_range_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        date_range(junk)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Chalmers", "chalmers"),
        ("  Jean   Luc\tPicard ", "jean luc picard"),
        ("Zoë Ångström", "zoe angstrom"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("Ｆｕｌｌ", "full"),
    ],
)
def test_normalize_string(raw: str, normalized: str) -> None:
    assert normalize_string(raw) == normalized


@pytest.mark.parametrize(
    ("ref", "base", "expected"),
    [
        ("Patient/1", None, ("Patient", "1")),
        ("Patient/1/_history/4", None, ("Patient", "1")),
        ("https://me/fhir/Patient/1", "https://me/fhir", ("Patient", "1")),
        ("https://me/fhir/Patient/1", "https://me/fhir/", ("Patient", "1")),
        ("https://other/fhir/Observation/9/_history/1", "https://me/fhir", ("Observation", "9")),
        ("https://other/fhir/NotAType/9", None, (None, None)),
        ("#c1", None, (None, None)),
        ("urn:uuid:0a", None, (None, None)),
        ("Patient", None, (None, None)),
        ("a/Patient/1", None, (None, None)),
    ],
)
def test_split_reference(ref: str, base: str | None, expected: tuple[Any, Any]) -> None:
    assert split_reference(ref, base) == expected


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "lastUpdated": "2024-01-01T00:00:00Z",
        "tag": [{"system": "http://t", "code": "a", "display": "A Tag"}],
        "security": [{"system": "http://s", "code": "R"}],
        "profile": ["http://p/Patient"],
        "source": "http://src#1",
    },
    "identifier": [{"system": "urn:mrn", "value": "123", "type": {"text": "Medical Record"}}],
    "active": True,
    "name": [{"family": "Müller", "given": ["Ann", "Marie"], "prefix": ["Dr."], "text": "Dr Ann"}],
    "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@b.c"}],
    "gender": "female",
    "birthDate": "1980-05",
    "address": [{"line": ["1 Main St", "Apt 2"], "city": "Springfield", "postalCode": "12345"}],
    "generalPractitioner": [{"reference": "https://me/fhir/Practitioner/dr"}],
    "managingOrganization": {"identifier": {"value": "only-identifier"}},
}


def test_patient_rows() -> None:
    rows = extract(PATIENT, "https://me/fhir")
    names = {(n, e) for p, n, e in rows.strings if p == "name"}
    assert names == {("muller", "Müller"), ("ann", "Ann"), ("marie", "Marie"), ("dr.", "Dr."),
                     ("dr ann", "Dr Ann")}  # fmt: skip
    assert ("family", "muller", "Müller") in rows.strings
    assert ("given", "marie", "Marie") in rows.strings
    assert {e for p, _, e in rows.strings if p == "address"} == {
        "1 Main St", "Apt 2", "Springfield", "12345"
    }  # fmt: skip
    assert ("address-city", "springfield", "Springfield") in rows.strings
    assert ("identifier", "urn:mrn", "123", "medical record") in rows.tokens
    assert ("gender", None, "female", None) in rows.tokens
    assert ("active", None, "true", None) in rows.tokens
    assert ("phone", None, "555", None) in rows.tokens
    assert ("email", None, "a@b.c", None) in rows.tokens
    assert ("email", None, "555", None) not in rows.tokens
    assert ("deceased", None, "false", None) in rows.tokens
    assert ("_tag", "http://t", "a", "a tag") in rows.tokens
    assert ("_security", "http://s", "R", None) in rows.tokens
    assert ("_profile", "http://p/Patient") in rows.uris
    assert ("_source", "http://src#1") in rows.uris
    assert ("birthdate", us("1980-05-01T00:00:00"), us("1980-06-01T00:00:00")) in rows.dates
    assert ("general-practitioner", "Practitioner", "dr", "https://me/fhir/Practitioner/dr") in (
        rows.references
    )
    # identifier-only reference: not indexed; _id / _lastUpdated: columns, not rows
    assert not [r for r in rows.references if r[0] == "organization"]
    assert not [r for r in rows.tokens if r[0] == "_id"]
    assert not [r for r in rows.dates if r[0] == "_lastUpdated"]


@pytest.mark.parametrize(
    ("deceased", "code"),
    [({}, "false"), ({"deceasedBoolean": True}, "true"), ({"deceasedBoolean": False}, "false"),
     ({"deceasedDateTime": "2020-01-01"}, "true")],
)  # fmt: skip
def test_patient_deceased(deceased: dict[str, Any], code: str) -> None:
    rows = extract({"resourceType": "Patient", **deceased})
    assert [t for t in rows.tokens if t[0] == "deceased"] == [("deceased", None, code, None)]
    death = [d for d in rows.dates if d[0] == "death-date"]
    assert death == ([("death-date", *date_range("2020-01-01"))] if "deceasedDateTime" in deceased
                     else [])  # fmt: skip


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose SerPl"},
            {"system": "http://local", "code": "GLU"},
        ],
        "text": "Glucose",
    },
    "category": [{"coding": [{"system": "http://cat", "code": "laboratory", "display": "Lab"}]}],
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": "Practitioner/dr"}, {"reference": "Practitioner/dr"}],
    "effectiveDateTime": "2024-01-01T08:30:00+01:00",
    "valueQuantity": {
        "value": 95,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    },  # fmt: skip
    "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 1.5, "code": "mmol/L"}}],
}


def test_observation_rows() -> None:
    rows = extract(OBSERVATION)
    assert [t for t in rows.tokens if t[0] == "code"] == [
        ("code", "http://loinc.org", "2345-7", "glucose"),
        ("code", "http://local", "GLU", "glucose"),
    ]
    assert ("category", "http://cat", "laboratory", "lab") in rows.tokens
    assert ("status", None, "final", None) in rows.tokens
    assert ("subject", "Patient", "p1", "Patient/p1") in rows.references
    assert ("patient", "Patient", "p1", "Patient/p1") in rows.references
    assert [r for r in rows.references if r[0] == "performer"] == [
        ("performer", "Practitioner", "dr", "Practitioner/dr")
    ]  # deduplicated
    lo = us("2024-01-01T07:30:00")
    assert ("date", lo, lo + 1_000_000) in rows.dates
    q = ("value-quantity", 95.0, 95.0, "http://unitsofmeasure.org", "mg/dL", "mg/dL")
    assert q in rows.quantities
    assert ("component-value-quantity", 1.5, 1.5, None, "mmol/L", None) in rows.quantities
    assert ("combo-value-quantity", 1.5, 1.5, None, "mmol/L", None) in rows.quantities
    assert not [r for r in rows.strings if r[0] == "value-string"]


def test_observation_patient_param_skips_group_subject() -> None:
    rows = extract({"resourceType": "Observation", "subject": {"reference": "Group/g"}})
    assert ("subject", "Group", "g", "Group/g") in rows.references
    assert not [r for r in rows.references if r[0] == "patient"]


@pytest.mark.parametrize(
    ("resource", "kind", "expected"),
    [
        ({"resourceType": "Condition", "onsetDateTime": "2021"}, "dates",
         ("onset-date", us("2021-01-01T00:00:00"), us("2022-01-01T00:00:00"))),
        ({"resourceType": "Condition", "onsetPeriod": {"start": "2021-03-01"}}, "dates",
         ("onset-date", us("2021-03-01T00:00:00"), MAX_US)),
        ({"resourceType": "Condition", "onsetPeriod": {"end": "2021-03-01"}}, "dates",
         ("onset-date", MIN_US, us("2021-03-02T00:00:00"))),
        ({"resourceType": "Condition", "onsetAge": {"value": 40, "unit": "a"}}, "quantities",
         ("onset-age", 40.0, 40.0, None, None, "a")),
        ({"resourceType": "Condition", "onsetRange": {"low": {"value": 3, "code": "a"}}},
         "quantities", ("onset-age", 3.0, MAX_QTY, None, "a", None)),
        ({"resourceType": "Condition", "code": {"text": "Headache"}}, "tokens",
         ("code", None, None, "headache")),
        ({"resourceType": "Observation", "valueString": "Positive  Result"}, "strings",
         ("value-string", "positive result", "Positive  Result")),
        ({"resourceType": "Observation", "valueCodeableConcept": {"text": "Neg"}}, "strings",
         ("value-string", "neg", "Neg")),
        ({"resourceType": "Observation", "effectivePeriod": {"start": "2020-01-01",
                                                             "end": "2020-01-02"}}, "dates",
         ("date", us("2020-01-01T00:00:00"), us("2020-01-03T00:00:00"))),
        ({"resourceType": "Observation", "effectiveTiming": {"event": ["2020-05-05"]}}, "dates",
         ("date", us("2020-05-05T00:00:00"), us("2020-05-06T00:00:00"))),
        ({"resourceType": "ChargeItem", "priceOverride": {"value": 9.5, "currency": "EUR"}},
         "quantities", ("price-override", 9.5, 9.5, "urn:iso:std:iso:4217", "EUR", None)),
        ({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]},
         "numbers", ("probability", 0.25, 0.25)),
        ({"resourceType": "Questionnaire", "url": "http://q/1"}, "uris", ("url", "http://q/1")),
        ({"resourceType": "QuestionnaireResponse", "questionnaire": "http://q/1|2"}, "references",
         ("questionnaire", None, None, "http://q/1|2")),
        ({"resourceType": "Bundle", "type": "document",
          "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}]}, "references",
         ("composition", "Composition", "c1", "Composition/c1")),
        ({"resourceType": "Encounter", "period": {"start": "2020-01-01T10:00:00Z"},
          "subject": {"reference": "Patient/1/_history/2"}}, "references",
         ("patient", "Patient", "1", "Patient/1/_history/2")),
        ({"resourceType": "ImagingStudy", "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]}, "tokens",
         ("identifier", "urn:dicom:uid", "urn:oid:1.2.3", None)),
        ({"resourceType": "Immunization", "occurrenceString": "last year"}, "dates", None),
        ({"resourceType": "Procedure", "performedDateTime": "2020-02-30"}, "dates", None),
        ({"resourceType": "Observation", "valueSampledData": {"origin": {"value": 1}}},
         "quantities", None),
    ],
)  # fmt: skip
def test_kind_rows(resource: dict[str, Any], kind: str, expected: tuple[Any, ...] | None) -> None:
    rows = getattr(extract(resource), kind)
    if expected is None:
        assert rows == [] or not [r for r in rows if r[0] in ("date", "value-quantity")]
    else:
        assert expected in rows


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "name": "not-a-list-of-dicts", "birthDate": 19800101},
        {"resourceType": "Patient", "birthDate": "garbage", "name": [None, 3, {"given": [None]}]},
        {"resourceType": "Observation", "code": {"coding": "x"}, "valueQuantity": {"value": "9"}},
        {"resourceType": "Observation", "subject": "Patient/1", "performer": [{"reference": 5}]},
        {"resourceType": "NoSuchType", "id": "x"},
        {"no": "resourceType"},
    ],
)
def test_malformed_is_skipped_not_raised(resource: dict[str, Any]) -> None:
    rows = extract(resource)
    assert rows.dates == []
    assert rows.quantities == []


def test_binary_has_only_meta_rows() -> None:
    rows = extract({"resourceType": "Binary", "meta": {"tag": [{"code": "x"}]}, "data": "AA=="})
    assert rows.tokens == [("_tag", None, "x", None)]
    assert rows.strings == rows.dates == rows.references == []
