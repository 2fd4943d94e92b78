"""Every public sample in ../shared/reference/hl7: the facts a reader finds in the message
(patient identity, how many results and reports, codes, values, units, statuses), written
down from the messages themselves, checked against the mapped Bundle."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mappers.hl7v2 import parse, to_bundle
from mappers.hl7v2.mapping import MappingError, UnsupportedMessage
from mappers.hl7v2.parser import split_batch

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "hl7"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/reference/hl7")

# file: (patient identifier values, {type: count}, [(obs code, value, unit, status)],
#        [report statuses])
# value: a number (valueQuantity), a string (valueString or a coded value's code), None: none
FACTS: dict[str, tuple[list[str], dict[str, int], list[tuple[str, Any, str, str]], list[str]]] = {
    "oru_r01_22_mirth_1.hl7": (
        ["1424589"], {"Observation": 69, "DiagnosticReport": 9, "ServiceRequest": 9},
        [("WBC", "5.8", "", "final"), ("CRP", "< 1", "", "final"),
         ("UTRIC", "cancelled", "", "final")],
        ["final"] * 9,
    ),
    "oru_r01_22_openlis_1.hl7": (
        ["20923085580", "2161348473", "01572633"], {"Observation": 4, "DiagnosticReport": 1},
        [("150001", None, "", "cancelled"), ("001719", "HTN", "", "final")], ["final"],
    ),
    "oru_r01_231_nhapi_1.hl7": (
        ["40206609", "3013839"], {"Observation": 20, "DiagnosticReport": 1},
        [("WBC", 20.0, "k/uL", "unknown"), ("PLTC", 45, "k/uL", "unknown")], ["unknown"],
    ),
    "oru_r01_23_nhapi_1.hl7": (
        ["7005728"], {"Observation": 2, "DiagnosticReport": 1},
        [("Z049107", Decimal("2.30"), "mmol/L", "final"), ("Z101068", "Lab STP", "", "final")],
        ["final"],
    ),
    "oru_r01_24_mirth_1.hl7": (
        ["4223161584"], {"Observation": 17, "DiagnosticReport": 1},
        [("84295", 145, "mmol/L", "final"), ("82565", Decimal("1.3"), "MG/DL", "final")],
        ["unknown"],
    ),
    "oru_r01_24_pythonhl7_1.hl7": (
        ["555-44-4444"], {"Observation": 2, "DiagnosticReport": 1},
        [("1554-5", 182, "mg/dl", "final")], ["unknown"],  # OBR-25 is empty (field 26 holds F)
    ),
    "oru_r01_251_athena_1.hl7": (
        ["V001047", "T00001059", "V00018739"], {"Observation": 0, "DiagnosticReport": 1},
        [], ["corrected"],
    ),
    "oru_r01_251_msfc_1.hl7": (
        ["14"], {"Observation": 3, "DiagnosticReport": 1},
        [("625-4", "27268008", "", "preliminary")], ["final"],
    ),
    "oru_r01_251_nist_2.hl7": (
        ["9817566735"], {"Observation": 1, "DiagnosticReport": 1},
        [("10368-9", 50, "ug/dL", "final")], ["final"],
    ),
    "oru_r01_251_nist_4.hl7": (
        ["5667351009"], {"Observation": 1, "DiagnosticReport": 1},
        [("11469-4", "Isolated", "", "final")], ["final"],
    ),
    "oru_r01_251_realm_1.hl7": (
        ["36363636", "444333333"], {"Observation": 3, "DiagnosticReport": 1},
        [("35659-2", 29, "a", "final"), ("11294-6", "food handler", "", "final")], ["final"],
    ),
    "oru_r01_251_reportstream_1.hl7": (
        ["100001"], {"Observation": 26, "DiagnosticReport": 5},
        [("35788-9", 0.5, "ug/mL", "preliminary"), ("19000-9", 32, "ug/mL", "preliminary"),
         ("MBCPCR", "GRAM POSITIVE PCR; NO TARGETS DETECTED (SEE COMMENT)", "", "corrected")],
        ["preliminary"] * 5,  # nine comment lines share 77202-0 + sub-id 1.1: kept apart
    ),
    "oru_r01_26_lfh_1.hl7": (
        ["0d70c6c8"], {"Observation": 3, "DiagnosticReport": 1}, [], ["final"],
    ),
    "oru_r01_26_lfh_2.hl7": (
        ["0d70c6c8"], {"Observation": 4, "DiagnosticReport": 1},
        [("12345", None, "", "final")], ["final"],
    ),
    "oru_r01_26_lfh_3.hl7": (
        ["000065432"], {"Observation": 1, "DiagnosticReport": 1},
        [("2552", 115, "", "final")], ["final"],
    ),
    "adt_a01_231_mirth_1.hl7": (["999945612", "800865"], {"Encounter": 1}, [], []),
    "adt_a01_23_msfc_1.hl7": (["10006579"], {"Encounter": 1}, [], []),
    "adt_a01_251_msfc_1.hl7": (["PATID1234", "123456789"], {"Patient": 1}, [], []),
    "adt_a01_26_lfh_rawcrlf.hl7": (["PID1234", "1234568965"], {"Encounter": 1}, [], []),
    "adt_a03_25_hapi_1.hl7": (["5520255", "ZZZZZZ83M64Z148R"], {"Encounter": 1}, [], []),
    "adt_a04_231_mirth_1.hl7": (["999965423", "800866"], {"Encounter": 1}, [], []),
    "adt_a04_23_msfc_1.hl7": (["MRN12345"], {"Patient": 1}, [], []),
    "adt_a04_25_pythonhl7_batch.hl7": (["0000112234"], {"Patient": 1}, [], []),
    "adt_a08_28_msfc_1.hl7": (["PATID1234", "123456789", "1234567", "PATID567"], {}, [], []),
    "adt_a31_231_mirth_1.hl7": (["999945612", "800865"], {"Encounter": 0}, [], []),
    "adt_a40_28_msfc_1.hl7": (["12345"], {"Patient": 2}, [], []),
    "orm_o01_22_hapi_1.hl7": (["N00829"], {"ServiceRequest": 1}, [], []),
    "orm_o01_23_efferent_1.hl7": (["42311"], {"ServiceRequest": 1}, [], []),
    "orm_o01_23_msfc_1.hl7": (["10006579"], {"ServiceRequest": 1}, [], []),
    "orm_o01_23_nodehl7_1.hl7": (["20891312"], {"ServiceRequest": 1}, [], []),
    "orm_o01_24_mirth_1.hl7": (["4223161584"], {"ServiceRequest": 1}, [], []),
    "orm_o01_26_msfc_1.hl7": (["PATID1234", "123456789", "1234567", "PATID567"],
                              {"ServiceRequest": 1}, [], []),  # fmt: skip
    "orm_o01_26_reportstream_1.hl7": (["2a14112c-ece1-4f82-915c-7b3a8d152eda"],
                                      {"ServiceRequest": 1}, [], []),  # fmt: skip
    "oml_o21_251_hapi_1.hl7": (["12345"], {"ServiceRequest": 1, "Specimen": 3}, [], []),
    "oml_o21_251_msfc_1.hl7": (["MRNTC09SA-Part A"], {"ServiceRequest": 1}, [], []),
    "oml_o21_25_hapi_2.hl7": (["14"], {"ServiceRequest": 3, "Specimen": 3}, [], []),
    "oml_o21_26_msfc_1.hl7": (["PATID1234", "123456789", "1234567", "PATID567"],
                              {"ServiceRequest": 1, "Specimen": 1}, [], []),  # fmt: skip
}  # fmt: skip
REFUSED = {
    "oru_r01_23_lfh_1.hl7": (MappingError, "PID^1^3"),  # only PID-9 (an alias name) is filled
    "bar_p01_24_hapi_1.hl7": (UnsupportedMessage, ""),
    "erp_z99_231_hapi_1.hl7": (UnsupportedMessage, ""),
}


def test_every_sample_has_facts() -> None:
    assert {p.name for p in SAMPLES.glob("*.hl7")} == set(FACTS) | set(REFUSED)


def _value(obs: dict[str, Any]) -> tuple[Any, str]:
    if "valueQuantity" in obs:  # the UCUM code where there is one, else the unit as sent
        q = obs["valueQuantity"]
        return q["value"], q.get("code") or q.get("unit", "")
    if "valueString" in obs:
        return obs["valueString"], ""
    if "valueCodeableConcept" in obs:
        return obs["valueCodeableConcept"]["coding"][0]["code"], ""
    return None, ""


@pytest.mark.parametrize("name", sorted(FACTS))
def test_sample_facts(name: str) -> None:
    idents, counts, observations, reports = FACTS[name]
    (raw,) = split_batch((SAMPLES / name).read_bytes())
    bundle = to_bundle(parse(raw))
    res = [e["resource"] for e in bundle["entry"]]
    found = Counter(r["resourceType"] for r in res)
    for res_type, n in counts.items():
        assert found[res_type] == n, (res_type, found)
    patient = next(r for r in res if r["resourceType"] == "Patient")
    values = [i["value"] for i in patient["identifier"]]
    assert values[: len(idents)] == idents
    for r in res:  # no blank value anywhere, every identifier has a value
        for ident in r.get("identifier", []):
            assert ident.get("value", "").strip() == ident.get("value"), (r, ident)
            assert ident["value"]
    obs = [r for r in res if r["resourceType"] == "Observation"]
    for code, value, unit, status in observations:
        (match,) = [o for o in obs if any(c.get("code") == code for c in o["code"].get(
            "coding", []))][:1]  # fmt: skip
        got, got_unit = _value(match)
        assert got == value and got_unit == unit and match["status"] == status, match
    statuses = [r["status"] for r in res if r["resourceType"] == "DiagnosticReport"]
    assert statuses == reports
    for report in (r for r in res if r["resourceType"] == "DiagnosticReport"):
        assert report["identifier"][0]["value"]
    ids = [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "PUT"]
    assert len(ids) == len(set(ids))  # one entry per identity


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_samples(name: str) -> None:
    error, where = REFUSED[name]
    with pytest.raises(error) as exc:
        to_bundle(parse((SAMPLES / name).read_bytes()))
    assert getattr(exc.value, "where", "") == where
