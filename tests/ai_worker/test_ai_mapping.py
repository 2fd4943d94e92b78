"""mappers.ai (pure) and the trigger rules, table-tested: every resource the write-back and
the review produce is valid FHIR R4, with the codes and references the issue asks for."""

from __future__ import annotations

from typing import Any

import pytest

from ai_worker.plugins import StudyInfo
from ai_worker.rules import models_for, parse_rules
from fhir_server.validation import validate_resource
from mappers.ai import (
    CodedFinding,
    Coding,
    Findings,
    KeyImage,
    Measurement,
    ModelInfo,
    device_id,
    device_resource,
    result_bundle,
    review_bundle,
    task_failed,
    task_progress,
    task_resource,
)
from mappers.ai.review import ReviewError

NOW = "2026-01-02T03:04:05.000+00:00"
MODEL = ModelInfo("ct-classical", "1.0.0", "interop-server", "not diagnostic")
STUDY: dict[str, Any] = {
    "resourceType": "ImagingStudy",
    "id": "s1",
    "status": "available",
    "subject": {"reference": "Patient/p1"},
    "identifier": [{"system": "urn:dietf:rfc:3986", "value": "urn:oid:1.2.3"}],
    "modality": [{"code": "CT"}],
    "description": "CT THORAX",
    "series": [
        {"uid": "1.2.3.4", "modality": {"code": "CT"}, "bodySite": {"code": "51185008",
                                                                     "display": "Chest"}},
    ],
}  # fmt: skip
FINDINGS = Findings(
    measurements=[
        Measurement(Coding("urn:interop:ai", "fat-volume", "fat volume"), 123.5, "mL"),
        Measurement(Coding("urn:interop:ai", "outlier-volume", "outlier"), 0.5, "mL", "H"),
    ],
    coded=[
        CodedFinding(
            Coding("urn:interop:ai", "body-region"),
            Coding("http://snomed.info/sct", "51185008", "Thoracic structure"),
            note="HU heuristic",
        )
    ],
    impression="Non-diagnostic.",
    conclusion_codes=[Coding("http://snomed.info/sct", "51185008", "Thoracic structure")],
    key_image=KeyImage(b"\x89PNG fake", "Key image"),
)


def entries(bundle: dict[str, Any], res_type: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == res_type]


def test_device_is_stable_and_valid() -> None:
    device = device_resource(MODEL)
    validate_resource(device)
    assert device["id"] == device_id(MODEL) == device_id(ModelInfo("ct-classical", "1.0.0"))
    assert device_id(ModelInfo("ct-classical", "2.0.0")) != device["id"]
    assert device["version"] == [{"value": "1.0.0"}]
    assert device["note"][0]["text"] == "not diagnostic"


def test_task_lifecycle_resources_are_valid() -> None:
    task = task_resource(STUDY, MODEL, NOW, {"reference": "Practitioner/x"}, "by hand")
    validate_resource(task)
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["focus"] == {"reference": "ImagingStudy/s1"}
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["owner"] == {"reference": f"Device/{device_id(MODEL)}"}
    coding = task["code"]["coding"][0]
    assert (coding["code"], coding["version"]) == ("ct-classical", "1.0.0")
    task["id"] = "t1"
    running = task_progress(task, "decoding", NOW)
    validate_resource(running)
    assert running["status"] == "in-progress" and running["businessStatus"]["text"] == "decoding"
    failed = task_failed(running, "PACS says no", NOW)
    validate_resource(failed)
    assert failed["statusReason"]["text"] == "PACS says no"
    assert failed["executionPeriod"]["end"] == NOW


def test_result_bundle() -> None:
    task = task_resource(STUDY, MODEL, NOW) | {"id": "t1"}
    bundle = result_bundle(task, STUDY, MODEL, FINDINGS, NOW)
    for entry in bundle["entry"]:
        validate_resource(entry["resource"])
    (report,) = entries(bundle, "DiagnosticReport")
    r = report["resource"]
    assert report["request"]["url"] == (
        "DiagnosticReport?identifier=urn:interop:ai:report|s1/ct-classical"
    )
    assert r["status"] == "preliminary"
    assert r["category"][0]["coding"][0]["code"] == "RAD"
    assert r["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4",
                                      "display": "Diagnostic imaging study"}  # fmt: skip
    assert r["presentedForm"][0]["contentType"] == "image/png"
    assert r["conclusionCode"][0]["coding"][0]["code"] == "51185008"
    observations = entries(bundle, "Observation")
    assert [e["fullUrl"] for e in observations] == [x["reference"] for x in r["result"]]
    fat, outlier, region = (e["resource"] for e in observations)
    ucum = "http://unitsofmeasure.org"
    assert fat["valueQuantity"] == {"value": 123.5, "unit": "mL", "system": ucum, "code": "mL"}
    assert "interpretation" not in fat
    assert outlier["interpretation"][0]["coding"][0]["code"] == "H"
    assert region["valueCodeableConcept"]["coding"][0]["code"] == "51185008"
    assert all(o["derivedFrom"] == [{"reference": "ImagingStudy/s1"}] for o in (fat, region))
    assert all(o["device"] == {"reference": f"Device/{device_id(MODEL)}"} for o in (fat, region))
    (prov,) = entries(bundle, "Provenance")
    targets = [t["reference"] for t in prov["resource"]["target"]]
    assert targets == [report["fullUrl"], *[e["fullUrl"] for e in observations]]
    assert prov["resource"]["entity"][0]["what"] == {"reference": "ImagingStudy/s1"}
    (done,) = entries(bundle, "Task")
    assert done["resource"]["status"] == "completed"
    assert done["resource"]["output"][0]["valueReference"] == {"reference": report["fullUrl"]}
    # the same study and model: the same conditional identities (a new version, not a copy)
    again = result_bundle(task, STUDY, MODEL, FINDINGS, "2026-02-02T00:00:00Z")
    assert [e["request"]["url"] for e in again["entry"][:-2]] == [
        e["request"]["url"] for e in bundle["entry"][:-2]
    ]


def test_review_bundles() -> None:
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "preliminary",
              "code": {"text": "x"}, "meta": {"versionId": "2"},
              "result": [{"reference": "Observation/o1"}]}  # fmt: skip
    obs = {"resourceType": "Observation", "id": "o1", "status": "preliminary",
           "code": {"text": "x"}, "meta": {"versionId": "1"}}  # fmt: skip
    reviewer = {"reference": "Practitioner/dr"}
    approve = review_bundle(report, [obs], True, reviewer, NOW)
    for entry in approve["entry"]:
        validate_resource(entry["resource"])
    assert approve["entry"][0]["request"] == {"method": "PUT", "url": "DiagnosticReport/r1",
                                              "ifMatch": 'W/"2"'}  # fmt: skip
    assert [e["resource"].get("status") for e in approve["entry"][:2]] == ["final", "final"]
    prov = approve["entry"][-1]["resource"]
    assert prov["agent"][0]["who"] == reviewer
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    reject = review_bundle(report, [obs], False, reviewer, NOW, "wrong patient")
    assert reject["entry"][0]["resource"]["status"] == "entered-in-error"
    assert reject["entry"][-1]["resource"]["reason"] == [{"text": "wrong patient"}]
    with pytest.raises(ReviewError):
        review_bundle(report, [], False, reviewer, NOW, " ")
    with pytest.raises(ReviewError) as info:
        review_bundle(report | {"status": "final"}, [], True, reviewer, NOW)
    assert info.value.conflict


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ({"model": "m"}, True),
        ({"model": "m", "modality": "CT"}, True),
        ({"model": "m", "modality": ["MR", "ct"]}, True),
        ({"model": "m", "modality": "MR"}, False),
        ({"model": "m", "body_part": "chest"}, True),
        ({"model": "m", "body_part": ["51185008"]}, True),
        ({"model": "m", "body_part": "HEAD"}, False),
        ({"model": "m", "description": "thorax|chest"}, True),
        ({"model": "m", "description": "^MR"}, False),
        ({"model": "m", "modality": "CT", "body_part": "HEAD"}, False),
    ],
)
def test_rules(rule: dict[str, Any], matches: bool) -> None:
    info = StudyInfo.from_imaging_study(STUDY)
    assert info.study_uid == "1.2.3" and info.patient == "Patient/p1"
    assert models_for(parse_rules([rule]), info) == (["m"] if matches else [])


def test_rules_need_a_model() -> None:
    with pytest.raises(ValueError, match="model"):
        parse_rules([{"modality": "CT"}])
