"""Pure mapping tables: OpenEMR rows -> canonical FHIR, canonical Patient -> OpenEMR payload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from mappers.openemr import (
    PatientRecord,
    Refusal,
    Systems,
    clinical,
    patient_to_fhir,
    patient_to_openemr,
    to_bundle,
)
from mappers.openemr.systems import codings

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openemr"
SYSTEMS = Systems.for_site("default")
PATIENT_ROW = {
    "id": "193",
    "uuid": "9b1e2c3d-0f4a-4b5c-8d6e-7f8091a2b3c4",
    "pid": "1",
    "pubpid": "test-fixture-789456",
    "title": "Mrs.",
    "fname": "Eduardo",
    "mname": "Kathy",
    "lname": "Perez",
    "DOB": "1957-01-09",
    "sex": "Male",
    "street": "789 Third Avenue",
    "city": "San Diego",
    "state": "CA",
    "postal_code": "90210",
    "country_code": "US",
    "phone_home": "(619) 555-4859",
    "phone_biz": "(619) 555-7821",
    "phone_cell": "(619) 555-7822",
    "email": "info@pennfirm.com",
    "deceased_date": None,
}


def valid(resource: dict) -> dict:
    """Every mapped resource must pass the same R4 validation the write path applies."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def test_patient_identifiers_names_and_contacts() -> None:
    pat = valid(patient_to_fhir(PATIENT_ROW, SYSTEMS))
    idents = {i["system"]: i for i in pat["identifier"]}
    assert idents["urn:openemr:default:uuid"]["value"] == PATIENT_ROW["uuid"]
    assert idents["urn:openemr:default:pid"]["value"] == "1"
    mrn = idents["urn:openemr:default:mrn"]
    assert mrn["value"] == "test-fixture-789456"
    assert mrn["type"]["coding"][0]["code"] == "MR"
    assert pat["name"] == [
        {"use": "official", "family": "Perez", "given": ["Eduardo", "Kathy"], "prefix": ["Mrs."]}
    ]
    assert pat["birthDate"] == "1957-01-09"
    assert pat["gender"] == "male"
    assert pat["address"] == [
        {
            "line": ["789 Third Avenue"],
            "city": "San Diego",
            "state": "CA",
            "postalCode": "90210",
            "country": "US",
        }
    ]
    assert {(t["system"], t["use"], t["value"]) for t in pat["telecom"]} == {
        ("phone", "home", "(619) 555-4859"),
        ("phone", "work", "(619) 555-7821"),
        ("phone", "mobile", "(619) 555-7822"),
        ("email", "home", "info@pennfirm.com"),
    }
    assert "deceasedDateTime" not in pat


def test_configured_systems_are_used() -> None:
    systems = Systems.for_site("clinic2", mrn="http://hospital.example/mrn")
    pat = patient_to_fhir(PATIENT_ROW, systems)
    assert {i["system"] for i in pat["identifier"]} == {
        "urn:openemr:clinic2:uuid",
        "urn:openemr:clinic2:pid",
        "http://hospital.example/mrn",
    }


@pytest.mark.parametrize(
    ("sex", "gender"),
    [("Female", "female"), ("Male", "male"), ("", "unknown"), ("Unknown", "unknown"),
     ("UNK", "unknown"), ("Intersex", "other"), ("female", "female")],
)  # fmt: skip
def test_sex_to_gender(sex: str, gender: str) -> None:
    assert patient_to_fhir(PATIENT_ROW | {"sex": sex}, SYSTEMS)["gender"] == gender


def test_zero_dates_and_deceased() -> None:
    pat = valid(
        patient_to_fhir(
            PATIENT_ROW | {"DOB": "0000-00-00", "deceased_date": "2018-03-15 00:00:00"}, SYSTEMS
        )
    )
    assert "birthDate" not in pat
    assert pat["deceasedDateTime"] == "2018-03-15T00:00:00Z"


def test_patient_needs_an_identity() -> None:
    with pytest.raises(ValueError, match="uuid or a pid"):
        patient_to_fhir({"fname": "A"}, SYSTEMS)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference fixtures not present")
def test_every_reference_fixture_patient_maps_and_validates() -> None:
    rows = json.loads((REFERENCE / "fixture_db_rows.json").read_text())["patient_data_rows"]
    for pid, row in enumerate(rows, start=1):
        pat = valid(patient_to_fhir(row | {"pid": pid}, SYSTEMS))
        assert pat["name"][0]["family"] == row["lname"]
    assert patient_to_fhir(rows[-1] | {"pid": 99}, SYSTEMS)["gender"] == "unknown"  # "Unknown"


VITAL_ROW = {
    "id": "12", "uuid": "v-uuid-1", "pid": "1", "eid": "5", "date": "2026-01-02 10:00:00",
    "bps": "120", "bpd": "80", "weight": "180.000000", "weight_unit": "lb",
    "height": "70.000000", "height_unit": "in", "temperature": "98.600000",
    "temperature_unit": "degF", "pulse": "72.000000", "respiration": "16.000000",
    "oxygen_saturation": "98.00", "BMI": "0.000000", "waist_circ": "0.00",
}  # fmt: skip


def test_vitals_keep_stored_units_with_ucum_codes() -> None:
    obs = [valid(o) for o in clinical.vitals(VITAL_ROW, "Patient/p1", SYSTEMS, "Encounter/e1")]
    by_code = {o["code"]["coding"][0]["code"]: o for o in obs}
    assert set(by_code) == {"29463-7", "8302-2", "8310-5", "8867-4", "9279-1", "2708-6", "85354-9"}
    assert by_code["29463-7"]["valueQuantity"] == {
        "value": 180, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"
    }  # fmt: skip
    assert by_code["8302-2"]["valueQuantity"]["code"] == "[in_i]"
    assert by_code["8310-5"]["valueQuantity"] == {
        "value": 98.6, "unit": "°F", "system": "http://unitsofmeasure.org", "code": "[degF]"
    }  # fmt: skip
    assert by_code["8867-4"]["valueQuantity"]["code"] == "/min"
    assert by_code["2708-6"]["valueQuantity"]["code"] == "%"
    bp = by_code["85354-9"]
    assert [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in bp["component"]
    ] == [
        ("8480-6", 120),
        ("8462-4", 80),
    ]
    assert bp["component"][0]["valueQuantity"]["code"] == "mm[Hg]"
    for o in obs:
        assert o["category"][0]["coding"][0]["code"] == "vital-signs"
        assert o["effectiveDateTime"] == "2026-01-02T10:00:00Z"
        assert o["encounter"] == {"reference": "Encounter/e1"}
    assert len({o["identifier"][0]["value"] for o in obs}) == len(obs)


def test_vitals_in_metric_units_and_database_rows_without_unit_columns() -> None:
    metric = clinical.vitals(
        {
            "id": "3",
            "weight": "80",
            "weight_unit": "kg",
            "temperature": "37",
            "temperature_unit": "degC",
        },
        "Patient/p1",
        SYSTEMS,
    )
    assert {o["valueQuantity"]["code"] for o in metric} == {"kg", "Cel"}
    db_row = clinical.vitals({"id": "4", "weight": "150.5", "height": "65"}, "Patient/p1", SYSTEMS)
    assert {o["valueQuantity"]["code"] for o in db_row} == {"[lb_av]", "[in_i]"}
    assert clinical.vitals({"id": "5", "weight": "0.000000"}, "Patient/p1", SYSTEMS) == []


def test_encounter() -> None:
    enc = valid(
        clinical.encounter(
            {"uuid": "e-uuid", "encounter": "5", "date": "2026-01-02 09:00:00",
             "reason": "Complains of nausea", "class_code": "AMB", "facility": "Your Clinic",
             "pc_catname": "Office Visit"},
            "Patient/p1",
            SYSTEMS,
        )
    )  # fmt: skip
    assert enc["identifier"][0] == {"system": "urn:openemr:default:encounter", "value": "e-uuid"}
    assert enc["class"]["code"] == "AMB"
    assert enc["period"] == {"start": "2026-01-02T09:00:00Z"}
    assert enc["reasonCode"] == [{"text": "Complains of nausea"}]
    assert enc["subject"] == {"reference": "Patient/p1"}


def test_problem_becomes_condition_with_icd10() -> None:
    cond = valid(
        clinical.condition(
            {"uuid": "c1", "title": "Hypertension", "diagnosis": "ICD10:I10;SNOMED-CT:38341003",
             "begdate": "2010-10-13 00:00:00", "enddate": None},
            "Patient/p1",
            SYSTEMS,
        )
    )  # fmt: skip
    assert cond["code"]["coding"] == [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"},
        {"system": "http://snomed.info/sct", "code": "38341003"},
    ]
    assert cond["code"]["text"] == "Hypertension"
    assert cond["clinicalStatus"]["coding"][0]["code"] == "active"
    assert cond["onsetDateTime"] == "2010-10-13T00:00:00Z"
    ended = clinical.condition(
        {"id": "7", "title": "Flu", "enddate": "2020-01-01"}, "Patient/p", SYSTEMS
    )
    assert ended["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert "coding" not in ended["code"]


def test_allergy() -> None:
    allergy = valid(
        clinical.allergy(
            {"uuid": "a1", "title": "Ampicillin", "diagnosis": "RXCUI:7980", "reaction": "hives",
             "verification": "unconfirmed", "begdate": "1980-05-10"},
            "Patient/p1",
            SYSTEMS,
        )
    )  # fmt: skip
    assert allergy["code"]["coding"] == [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980"}
    ]
    assert allergy["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "hives"
    assert allergy["patient"] == {"reference": "Patient/p1"}


def test_medication_and_prescription() -> None:
    med = valid(
        clinical.medication({"id": "77", "title": "Norvasc", "begdate": "2013-04-13 00:00:00"},
                            "Patient/p1", SYSTEMS)
    )  # fmt: skip
    assert (med["intent"], med["status"]) == ("plan", "active")
    assert med["medicationCodeableConcept"] == {"text": "Norvasc"}
    rx = valid(
        clinical.prescription(
            {"uuid": "rx1", "drug": "Lisinopril 10 MG", "rxnorm_drugcode": "314076", "active": "1",
             "date_added": "2026-01-02 10:00:00", "dosage": "1 tablet", "route": "oral"},
            "Patient/p1",
            SYSTEMS,
        )
    )  # fmt: skip
    assert rx["intent"] == "order"
    assert rx["medicationCodeableConcept"]["coding"] == [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076"}
    ]
    assert rx["dosageInstruction"] == [{"text": "1 tablet oral"}]
    stopped = clinical.prescription({"id": "2", "drug": "X", "active": "0"}, "Patient/p", SYSTEMS)
    assert stopped["status"] == "stopped"
    assert "coding" not in stopped["medicationCodeableConcept"]


def test_code_prefixes() -> None:
    assert codings("ICD10:I10") == [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]
    assert codings("nonsense; :x; FOO:1") == []
    assert codings(None) == []


def test_bundle_links_clinical_records_to_the_patient_and_encounter() -> None:
    record = PatientRecord(
        patient=PATIENT_ROW,
        encounters=[{"uuid": "e-uuid", "encounter": "5", "date": "2026-01-02"}],
        vitals=[VITAL_ROW],
        problems=[{"uuid": "c1", "title": "Hypertension", "diagnosis": "ICD10:I10"}],
        allergies=[{"uuid": "a1", "title": "Ampicillin"}],
        medications=[{"id": "77", "title": "Norvasc"}],
        prescriptions=[{"uuid": "rx1", "drug": "Lisinopril"}],
    )
    bundle = to_bundle(record, SYSTEMS)
    entries = bundle["entry"]
    assert entries[0]["request"] == {
        "method": "PUT",
        "url": f"Patient?identifier=urn:openemr:default:uuid|{PATIENT_ROW['uuid']}",
    }
    patient_ref, encounter_ref = entries[0]["fullUrl"], entries[1]["fullUrl"]
    vitals = [e["resource"] for e in entries if e["resource"]["resourceType"] == "Observation"]
    assert len(vitals) == 7
    assert all(v["encounter"]["reference"] == encounter_ref for v in vitals)
    assert all(
        (e["resource"].get("subject") or e["resource"].get("patient"))["reference"] == patient_ref
        for e in entries[1:]
    )
    assert all(
        e["request"]["method"] == "PUT" and "?identifier=" in e["request"]["url"] for e in entries
    )


@pytest.mark.parametrize(
    ("patient", "code"),
    [
        ({"birthDate": "1980-01-02", "name": [{"given": ["Ann"]}]}, "missing-family-name"),
        (
            {"birthDate": "1980-01-02", "name": [{"family": "X", "given": ["Ann"]}]},
            "family-name-too-short",
        ),
        ({"birthDate": "1980-01-02", "name": [{"family": "Xu"}]}, "missing-given-name"),
        ({"name": [{"family": "Xu", "given": ["Ann"]}]}, "missing-birth-date"),
        ({"birthDate": "1980", "name": [{"family": "Xu", "given": ["Ann"]}]}, "partial-birth-date"),
    ],
)
def test_patient_out_refusals(patient: dict, code: str) -> None:
    result = patient_to_openemr({"resourceType": "Patient", **patient}, "MRN1")
    assert isinstance(result, Refusal)
    assert result.code == code
    assert result.reason


@pytest.mark.parametrize(
    ("gender", "sex"),
    [("female", "Female"), ("male", "Male"), ("unknown", "Unknown"), ("other", "Unknown"),
     (None, "Unknown")],
)  # fmt: skip
def test_patient_out_payload(gender: str | None, sex: str) -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Xu", "given": ["Ann", "Li"]}],
        "birthDate": "1980-01-02",
    }
    if gender:
        patient["gender"] = gender
    body = patient_to_openemr(patient, "MRN1")
    assert body == {"fname": "Ann", "lname": "Xu", "mname": "Li", "DOB": "1980-01-02",
                    "sex": sex, "pubpid": "MRN1"}  # fmt: skip
    assert 4 <= len(body["sex"]) <= 30  # OpenEMR's only check on sex; "UNK" would fail


def test_local_times_get_the_installation_offset() -> None:
    systems = Systems.for_site("default", zone="America/New_York")
    enc = clinical.encounter({"id": "1", "date": "2026-01-02 09:00:00"}, "Patient/p", systems)
    assert enc["period"]["start"] == "2026-01-02T09:00:00-05:00"
