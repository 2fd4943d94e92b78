"""The terminology operations name their permission: read (`r`) on the type they run on
(ValueSet, CodeSystem, ConceptMap). No token is 401; a grant without that type is 403; a
patient-confined grant may use them (shared, non-patient content) but never writes the
terminology the server and the HL7 mapper use."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

from typing import Any

import pytest
from side_support import (  # noqa: F401 - fixtures are used by name
    backend,
    bearer,
    http,
    is_outcome,
    patient_app,
    side_app,
    side_session_app,
    smart,
    two_patients,
)
from starlette.testclient import TestClient

GENDER = "http://hl7.org/fhir/administrative-gender"
CALLS = (
    (
        "ValueSet",
        "/fhir/ValueSet/$expand",
        {"url": "http://hl7.org/fhir/ValueSet/administrative-gender"},
    ),
    (
        "ValueSet",
        "/fhir/ValueSet/administrative-gender/$validate-code",
        {"system": GENDER, "code": "male"},
    ),
    ("CodeSystem", "/fhir/CodeSystem/$lookup", {"system": GENDER, "code": "male"}),
    (
        "CodeSystem",
        "/fhir/CodeSystem/$subsumes",
        {"system": GENDER, "codeA": "male", "codeB": "male"},
    ),
    (
        "ConceptMap",
        "/fhir/ConceptMap/cm-administrative-gender-v2/$translate",
        {"system": GENDER, "code": "male"},
    ),
)


def as_parameters(query: dict[str, str]) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": k, "valueString": v} for k, v in query.items()]}  # fmt: skip


@pytest.mark.parametrize(("res_type", "path", "query"), CALLS)
def test_no_token_is_401_by_get_and_post(
    http: TestClient, smart: Any, res_type: str, path: str, query: dict[str, str]
) -> None:
    assert is_outcome(http.get(path, params=query), 401)
    assert is_outcome(http.post(path, json=as_parameters(query)), 401)


@pytest.mark.parametrize(("res_type", "path", "query"), CALLS)
def test_a_grant_without_the_type_is_403(
    http: TestClient, smart: Any, res_type: str, path: str, query: dict[str, str]
) -> None:
    others = {"ValueSet": "CodeSystem", "CodeSystem": "ConceptMap", "ConceptMap": "ValueSet"}
    headers, _, _ = backend(smart, f"system/Observation.rs system/{others[res_type]}.rs")
    assert is_outcome(http.get(path, params=query, headers=headers), 403)
    assert is_outcome(http.post(path, json=as_parameters(query), headers=headers), 403)
    allowed, _, _ = backend(smart, f"system/{res_type}.r")
    assert http.get(path, params=query, headers=allowed).status_code == 200
    assert http.post(path, json=as_parameters(query), headers=allowed).status_code == 200


def test_search_alone_is_not_read(http: TestClient, smart: Any) -> None:
    headers, _, _ = backend(smart, "system/ValueSet.s")
    path, query = CALLS[0][1], CALLS[0][2]
    assert is_outcome(http.get(path, params=query, headers=headers), 403)


def test_patient_app_uses_terminology_but_cannot_change_it(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    app = patient_app(smart, two_patients["A"], "patient/*.cruds")
    for _, path, query in CALLS:
        assert http.get(path, params=query, headers=app).status_code == 200, path
    rogue = {"resourceType": "ConceptMap", "id": "rogue", "status": "active",
             "url": "urn:interop:ConceptMap:v2-0085-to-observation-status",
             "group": [{"source": "http://terminology.hl7.org/CodeSystem/v2-0085",
                        "target": "http://hl7.org/fhir/observation-status",
                        "element": [{"code": "F", "target": [
                            {"code": "cancelled", "equivalence": "equivalent"}]}]}]}  # fmt: skip
    assert is_outcome(http.put("/fhir/ConceptMap/rogue", json=rogue, headers=app), 403)
    gender = {"resourceType": "CodeSystem", "id": "g", "url": GENDER, "status": "active",
              "content": "complete", "concept": [{"code": "male"}]}  # fmt: skip
    assert is_outcome(http.post("/fhir/CodeSystem", json=gender, headers=app), 403)
    reader, _, _ = backend(smart, "system/*.rs")
    translated = http.get(
        "/fhir/ConceptMap/$translate",
        params={"system": "http://terminology.hl7.org/CodeSystem/v2-0085", "code": "F",
                "targetsystem": "http://hl7.org/fhir/observation-status"},
        headers=reader,
    ).json()  # fmt: skip
    assert "final" in str(translated) and "cancelled" not in str(translated)
