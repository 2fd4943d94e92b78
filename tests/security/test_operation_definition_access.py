"""The built-in OperationDefinitions and SearchParameters (served though not stored:
fhir_server.api.definitions) are guarded like any resource: no token is 401, a grant without
the type is 403, a read needs `r` and a search `s`; a patient-confined grant may not replace
them."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

from typing import Any

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

READ = "/fhir/OperationDefinition/ValueSet-expand"
SEARCH = "/fhir/OperationDefinition"
QUERY = {"url": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"}


def test_no_token_is_401(http: TestClient, smart: Any) -> None:
    assert is_outcome(http.get(READ), 401)
    assert is_outcome(http.get(SEARCH, params=QUERY), 401)


def test_a_grant_without_the_type_is_403_and_read_is_not_search(
    http: TestClient, smart: Any
) -> None:
    others, _, _ = backend(smart, "system/ValueSet.rs system/Observation.rs")
    assert is_outcome(http.get(READ, headers=others), 403)
    assert is_outcome(http.get(SEARCH, params=QUERY, headers=others), 403)
    reader, _, _ = backend(smart, "system/OperationDefinition.r")
    assert http.get(READ, headers=reader).json()["url"] == QUERY["url"]
    assert is_outcome(http.get(SEARCH, params=QUERY, headers=reader), 403)
    searcher, _, _ = backend(smart, "system/OperationDefinition.s")
    found = http.get(SEARCH, params=QUERY, headers=searcher).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [QUERY["url"]]
    assert is_outcome(http.get(READ, headers=searcher), 403)


def test_a_patient_app_cannot_replace_a_definition(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    app = patient_app(smart, two_patients["A"], "patient/*.cruds")
    rogue = {"resourceType": "OperationDefinition", "id": "ValueSet-expand", "url": QUERY["url"],
             "name": "Rogue", "status": "active", "kind": "operation", "code": "expand",
             "system": False, "type": True, "instance": False}  # fmt: skip
    assert is_outcome(http.put(READ, json=rogue, headers=app), 403)
    assert is_outcome(http.delete(READ, headers=app), 403)
    # reading them is shared, non-patient content, as the terminology is
    assert http.get(READ, headers=app).json()["url"] == QUERY["url"]
    found = http.get(SEARCH, params=QUERY, headers=app).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [QUERY["url"]]
    reader, _, _ = backend(smart, "system/OperationDefinition.r")
    assert http.get(READ, headers=reader).json()["name"] == "Value Set Expansion"


def test_search_parameter_definitions_are_guarded_the_same_way(
    http: TestClient, smart: Any
) -> None:
    read, search = "/fhir/SearchParameter/clinical-code", "/fhir/SearchParameter"
    query = {"url": "http://hl7.org/fhir/SearchParameter/clinical-code"}
    assert is_outcome(http.get(read), 401)
    others, _, _ = backend(smart, "system/OperationDefinition.rs system/Observation.rs")
    assert is_outcome(http.get(read, headers=others), 403)
    assert is_outcome(http.get(search, params=query, headers=others), 403)
    reader, _, _ = backend(smart, "system/SearchParameter.r")
    assert http.get(read, headers=reader).json()["url"] == query["url"]
    assert is_outcome(http.get(search, params=query, headers=reader), 403)
    searcher, _, _ = backend(smart, "system/SearchParameter.s")
    found = http.get(search, params=query, headers=searcher).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [query["url"]]


def test_a_patient_app_reads_but_cannot_replace_a_search_parameter(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    read = "/fhir/SearchParameter/clinical-code"
    app = patient_app(smart, two_patients["A"], "patient/*.cruds")
    rogue = {"resourceType": "SearchParameter", "id": "clinical-code",
             "url": "http://hl7.org/fhir/SearchParameter/clinical-code", "name": "Rogue",
             "status": "active", "description": "rogue", "code": "code",
             "base": ["Observation"], "type": "token",
             "expression": "Observation.id"}  # fmt: skip
    assert is_outcome(http.put(read, json=rogue, headers=app), 403)
    assert is_outcome(http.delete(read, headers=app), 403)
    assert http.get(read, headers=app).json()["name"] != "Rogue"  # the official one stays
