"""The direct-SQL searches give exactly what the general compiler gives."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_server.search.query import Compiler, execute

BASE = "http://testserver/fhir"
LOINC = "http://loinc.org"

SIMPLE = [
    ("Observation", [("subject", "Patient/p1"), ("code", f"{LOINC}|2339-0")]),
    ("Observation", [("code", "2339-0"), ("subject", "p1")]),
    ("Observation", [("subject", f"{BASE}/Patient/p2")]),
    ("Observation", [("code", f"{LOINC}|")]),
    ("Observation", [("code", "|local"), ("_count", "1")]),
    ("Observation", [("_id", "o1"), ("code", "2339-0")]),
    ("Patient", [("name", "MÜL")]),
    ("Patient", [("name", "smith"), ("gender", "male")]),
    ("Patient", [("identifier", "urn:mrn|1001")]),
    ("Patient", [("family", "zz")]),
]


@pytest.fixture
def stored(client: TestClient) -> None:
    patients = [("p1", "Müller", "male", "1001"), ("p2", "Smith", "male", "1002")]
    patients.append(("p3", "Smithers", "female", "1003"))
    for pid, family, gender, mrn in patients:
        body = {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": family}],
            "gender": gender,
            "identifier": [{"system": "urn:mrn", "value": mrn}],
        }
        assert client.put(f"/fhir/Patient/{pid}", json=body).status_code == 201
    codes = [(LOINC, "2339-0"), (LOINC, "718-7"), (None, "local")]
    for i in range(12):
        system, code = codes[i % 3]
        coding: dict[str, Any] = {"code": code} | ({"system": system} if system else {})
        body = {
            "resourceType": "Observation",
            "id": f"o{i}",
            "status": "final",
            "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/p{i % 3 + 1}"},
        }
        assert client.put(f"/fhir/Observation/o{i}", json=body).status_code == 201


@pytest.mark.parametrize(("res_type", "items"), SIMPLE)
def test_direct_matches_general(app: Any, stored: None, res_type: str, items: list) -> None:
    compiler = Compiler(BASE)
    direct = compiler.compile(res_type, items, direct=True)
    general = compiler.compile(res_type, items)
    assert direct.direct is not None and general.direct is None
    with app.state.store.connection() as conn:
        fast, slow = execute(conn, direct), execute(conn, general)
    assert [r.res_id for r in fast.rows] == [r.res_id for r in slow.rows]
    assert fast.total == slow.total


@pytest.mark.parametrize(
    "items",
    [
        [("code", "2339-0,718-7")],
        [("code:text", "glucose")],
        [("date", "2020")],
        [("subject.name", "x")],
        [("code", "x"), ("_sort", "_lastUpdated")],
        [("code", "x"), ("_offset", "5")],
        [("code", "x"), ("_count", "0")],
        [("code", "x"), ("_total", "none")],
    ],
)
def test_other_searches_take_the_general_path(items: list) -> None:
    assert Compiler(BASE).compile("Observation", items, direct=True).direct is None


@pytest.mark.parametrize(
    ("code", "expected"), [("2339-0", {"o0", "o3", "o6", "o9"}), ("718-7", set())]
)
def test_conditions_added_later_are_honoured(
    app: Any, stored: None, code: str, expected: set[str]
) -> None:
    """A compartment (or access-policy) condition added after compiling is not lost:
    718-7 results all belong to Patient/p2, so p1's compartment holds none of them."""
    from fhir_server.search.query import compartment_condition

    plan = Compiler(BASE).compile("Observation", [("code", f"{LOINC}|{code}")], direct=True)
    plan.where.append(compartment_condition("p1", "Observation"))
    with app.state.store.connection() as conn:
        result = execute(conn, plan)
    assert {r.res_id for r in result.rows} == expected
    assert result.total == len(expected)
