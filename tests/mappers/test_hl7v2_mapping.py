"""Mapping rules from the v2-to-FHIR IG, one table row per rule."""

from __future__ import annotations

import glob
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mappers.hl7v2 import parse, to_bundle
from mappers.hl7v2.datatypes import dt
from mappers.hl7v2.mapping import MappingError, UnsupportedMessage
from mappers.hl7v2.parser import split_batch

MSH = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||{type}|CTRL1|P|2.5.1"
PID = "PID|1||123^^^HOSP&1.2.3&ISO^MR||Doe^Jane^Q||19800102|F|||1 Main St^^Town^ST^12345"
OBR = "OBR|1|PL1|FI1|2345-7^Glucose^LN|||20240101110000|||||||||||||||20240101113000|||{st}"


def oru(*obx: str, st: str = "F") -> dict[str, Any]:
    text = "\r".join([MSH.format(type="ORU^R01"), PID, OBR.format(st=st), *obx])
    return to_bundle(parse(text), tz="UTC")


def of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_patient_is_conditional_on_pid3_with_oid_system() -> None:
    b = oru()
    entry = next(e for e in b["entry"] if e["resource"]["resourceType"] == "Patient")
    assert entry["request"] == {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.3|123"}
    pat = entry["resource"]
    assert pat["name"] == [{"family": "Doe", "given": ["Jane", "Q"]}]
    assert pat["birthDate"] == "1980-01-02"
    assert pat["gender"] == "female"
    assert pat["address"][0]["city"] == "Town"


def test_configured_authority_table_wins() -> None:
    text = "\r".join([MSH.format(type="ADT^A04"), "PID|1||9^^^MPI^MR"])
    b = to_bundle(parse(text), systems={"MPI": "https://hosp.example/mpi"})
    assert b["entry"][0]["request"]["url"] == "Patient?identifier=https://hosp.example/mpi|9"


@pytest.mark.parametrize(
    ("obx", "expected"),
    [
        ("OBX|1|NM|1^A^LN||5.4|mg/dL^^UCUM",
         {"valueQuantity": {"value": Decimal("5.4"), "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                            "code": "mg/dL"}}),
        ("OBX|1|ST|1^A^LN||hello \\T\\ bye", {"valueString": "hello & bye"}),
        ("OBX|1|TX|1^A^LN||free text", {"valueString": "free text"}),
        ("OBX|1|FT|1^A^LN||a\\.br\\b", {"valueString": "a\nb"}),
        ("OBX|1|CWE|1^A^LN||260373001^Detected^SCT",
         {"valueCodeableConcept": {"coding": [{"code": "260373001", "display": "Detected",
                                               "system": "http://snomed.info/sct"}],
                                   "text": "Detected"}}),
        ("OBX|1|CE|1^A^LN||P^Positive^HL70078",
         {"valueCodeableConcept": {"coding": [{"code": "P", "display": "Positive",
           "system": "http://terminology.hl7.org/CodeSystem/v2-0078"}], "text": "Positive"}}),
        ("OBX|1|SN|1^A^LN||<^10|mg", {"valueQuantity": {"value": 10, "unit": "mg",
                                                       "system": "http://unitsofmeasure.org",
                                                       "code": "mg", "comparator": "<"}}),
        ("OBX|1|SN|1^A^LN||^1^:^128", {"valueRatio": {"numerator": {"value": 1},
                                                      "denominator": {"value": 128}}}),
        ("OBX|1|SN|1^A^LN||^2^-^4", {"valueRange": {"low": {"value": 2}, "high": {"value": 4}}}),
        ("OBX|1|DT|1^A^LN||20240305", {"valueDateTime": "2024-03-05"}),
        ("OBX|1|DTM|1^A^LN||202403051230+0100", {"valueDateTime": "2024-03-05T12:30:00+01:00"}),
        ("OBX|1|TS|1^A^LN||20240305123015", {"valueDateTime": "2024-03-05T12:30:15Z"}),
        ("OBX|1|TM|1^A^LN||1230", {"valueTime": "12:30:00"}),
        ("OBX|1|NR|1^A^LN||3^7", {"valueRange": {"low": {"value": 3}, "high": {"value": 7}}}),
    ],
)  # fmt: skip
def test_obx_value_by_type(obx: str, expected: dict[str, Any]) -> None:
    obs = of(oru(obx + "|||||F"), "Observation")[0]
    value = {k: v for k, v in obs.items() if k.startswith("value")}
    assert value == expected


def test_repeating_obx5_becomes_components() -> None:
    obs = of(oru("OBX|1|ST|1^A^LN||one~two|||||F"), "Observation")[0]
    assert [c["valueString"] for c in obs["component"]] == ["one", "two"]


@pytest.mark.parametrize(
    ("code", "status"),
    [("F", "final"), ("C", "corrected"), ("P", "preliminary"), ("I", "registered"),
     ("R", "preliminary"), ("S", "preliminary"), ("O", "registered"), ("X", "cancelled"),
     ("D", "entered-in-error"), ("", "unknown")],
)  # fmt: skip
def test_obx11_status(code: str, status: str) -> None:
    obs = of(oru(f"OBX|1|NM|1^A^LN||1||||||{code}"), "Observation")[0]
    assert obs["status"] == status


def test_reference_range_interpretation_effective_and_note() -> None:
    b = oru("OBX|1|NM|1^A^LN||9|mg|3-7|H~A|||F|||20240101100000", "NTE|1||Check \\F\\ again")
    obs = of(b, "Observation")[0]
    assert obs["referenceRange"] == [{"text": "3-7"}]
    assert [i["coding"][0]["code"] for i in obs["interpretation"]] == ["H", "A"]
    assert obs["effectiveDateTime"] == "2024-01-01T10:00:00Z"
    assert obs["note"] == [{"text": "Check | again"}]


@pytest.mark.parametrize(("st", "status"), [("F", "final"), ("P", "preliminary"),
                                            ("C", "corrected"), ("", "unknown")])  # fmt: skip
def test_diagnostic_report(st: str, status: str) -> None:
    b = oru("OBX|1|NM|1^A^LN||1||||||F", st=st)
    rep = of(b, "DiagnosticReport")[0]
    assert rep["status"] == status
    assert rep["code"]["coding"][0] == {"code": "2345-7", "display": "Glucose",
                                        "system": "http://loinc.org"}  # fmt: skip
    assert rep["effectiveDateTime"] == "2024-01-01T11:00:00Z"
    assert rep["issued"] == "2024-01-01T11:30:00Z"
    assert len(rep["result"]) == 1
    sr = of(b, "ServiceRequest")[0]
    assert [i["value"] for i in sr["identifier"]] == ["PL1", "FI1"]


def test_result_identity_is_stable_across_corrections() -> None:
    first = oru("OBX|1|NM|1^A^LN||1||||||F")
    corrected = oru("OBX|1|NM|1^A^LN||2||||||C", st="C")
    urls = [e["request"]["url"] for e in first["entry"] if e["request"]["method"] == "PUT"]
    again = [e["request"]["url"] for e in corrected["entry"] if e["request"]["method"] == "PUT"]
    assert urls == again
    assert "Observation?identifier=FI1-1" in urls  # order number + OBX-3, no set id


def test_specimen_and_message_header_provenance() -> None:
    b = oru("OBX|1|NM|1^A^LN||1||||||F", "SPM|1|S1||119297000^Blood^SCT")
    assert of(b, "Specimen")[0]["type"]["coding"][0]["code"] == "119297000"
    header = of(b, "MessageHeader")[0]
    assert header["eventCoding"]["code"] == "R01"
    prov = of(b, "Provenance")[0]
    assert prov["entity"][0]["what"]["identifier"]["value"] == "CTRL1"


def test_adt_encounter_and_a40_merge() -> None:
    a01 = "\r".join([MSH.format(type="ADT^A01"), PID,
                     "PV1|1|I|||||||||||||||||V100|||||||||||||||||||||||||20240101"])  # fmt: skip
    enc = of(to_bundle(parse(a01)), "Encounter")[0]
    assert enc["class"]["code"] == "IMP"
    assert enc["status"] == "in-progress"
    assert enc["identifier"][0]["value"] == "V100"
    assert enc["period"] == {"start": "2024-01-01"}
    a40 = "\r".join([MSH.format(type="ADT^A40"), PID, "MRG|999^^^HOSP&1.2.3&ISO"])
    survivor, merged = of(to_bundle(parse(a40)), "Patient")
    assert merged["active"] is False
    assert merged["link"][0]["type"] == "replaced-by"
    assert survivor["link"][0]["type"] == "replaces"


def test_orders_status_from_orc() -> None:
    text = "\r".join([MSH.format(type="ORM^O01"), PID, "ORC|CA|PL9", "OBR|1|PL9||1^X^LN"])
    sr = of(to_bundle(parse(text)), "ServiceRequest")[0]
    assert sr["status"] == "revoked"


def test_unsupported_and_missing_patient() -> None:
    with pytest.raises(UnsupportedMessage):
        to_bundle(parse(MSH.format(type="BAR^P01")))
    with pytest.raises(MappingError, match="PID-3"):
        to_bundle(parse(MSH.format(type="ADT^A04") + "\rPID|1"))


def test_time_zone_setting_applies_to_naive_times() -> None:
    assert dt("202407011200", "Europe/Paris") == "2024-07-01T12:00:00+02:00"
    assert dt("2024", "UTC") == "2024"


def test_every_supported_reference_sample_maps() -> None:
    mapped = 0
    for path in sorted(glob.glob("/work/shared/reference/hl7/*.hl7")):
        for raw in split_batch(Path(path).read_bytes()):
            msg = parse(raw)
            try:
                bundle = to_bundle(msg)
            except UnsupportedMessage:
                continue
            except MappingError as exc:
                assert "PID-3" in str(exc), path
                continue
            assert bundle["type"] == "transaction"
            mapped += 1
    assert mapped >= 30


def test_obx_performers_become_organization_and_practitioners() -> None:
    fields = ["OBX", "1", "NM", "1^A^LN", "", "5", "mg/dL^^UCUM"] + [""] * 19
    fields[11] = "F"
    fields[15] = "LABX^Central Lab^L"
    fields[16] = "77^Smith^Ann^^^^^^NPI&2.16.840.1.113883.4.6&ISO"
    fields[23] = "Central Lab^^^^^^^^^CLIA123"
    fields[24] = "1 Lab Rd^^Labtown^ST^99999"
    fields[25] = "88^House^Greg"
    obx = "|".join(fields)
    b = oru(obx, obx.replace("OBX|1|NM|1^A^LN", "OBX|2|NM|2^B^LN"))
    first, second = of(b, "Observation")
    refs = {e["fullUrl"]: e for e in b["entry"]}
    kinds = [refs[p["reference"]]["resource"]["resourceType"] for p in first["performer"]]
    assert kinds == ["Organization", "Organization", "Practitioner", "Practitioner"]
    assert first["performer"] == second["performer"]  # one entry per performer, shared
    orgs = {o["identifier"][0]["value"]: o for o in of(b, "Organization")}
    assert orgs["CLIA123"]["name"] == "Central Lab"
    assert orgs["CLIA123"]["address"][0]["city"] == "Labtown"
    assert orgs["LABX"]["name"] == "Central Lab"
    smith = refs[first["performer"][2]["reference"]]
    assert smith["request"]["url"] == "Practitioner?identifier=urn:oid:2.16.840.1.113883.4.6|77"
    assert smith["resource"]["name"] == [{"family": "Smith", "given": ["Ann"]}]
    assert first["performer"][3]["display"] == "Greg House"
    assert len(of(b, "Practitioner")) == 2


def test_specimen_group_observations_focus_on_their_specimen() -> None:
    b = oru(
        "OBX|1|NM|1^A^LN||5|mg/dL^^UCUM|||||F",
        "SPM|1|SP1^^^||BLD^Blood^HL70487|||||||||||||20240101100000",
        "OBX|2|NM|SVOL^Volume^L||3|mL^^UCUM|||||F",
    )
    (spec,) = of(b, "Specimen")
    spec_url = next(e["fullUrl"] for e in b["entry"] if e["resource"] is spec)
    result, about_specimen = of(b, "Observation")
    assert about_specimen["focus"] == [{"reference": spec_url}]
    assert result["specimen"] == {"reference": spec_url}
    (report,) = of(b, "DiagnosticReport")
    assert report["specimen"] == [{"reference": spec_url}]
    result_url = next(e["fullUrl"] for e in b["entry"] if e["resource"] is result)
    assert report["result"] == [{"reference": result_url}]  # the specimen's own OBX is not a result


def test_notes_after_obr_annotate_the_order() -> None:
    b = oru("NTE|1||fasting sample", "OBX|1|NM|1^A^LN||5|mg/dL^^UCUM|||||F", "NTE|1||recheck")
    (order,) = of(b, "ServiceRequest")
    assert order["note"] == [{"text": "fasting sample"}]
    (obs,) = of(b, "Observation")
    assert obs["note"] == [{"text": "recheck"}]
