"""Every search parameter the CapabilityStatement declares names the official R4
SearchParameter by its canonical URL, and that URL resolves on this server
(`GET SearchParameter/{id}`, `GET SearchParameter?url=`): the definition as the specification
has it. Stored SearchParameters come first, as for OperationDefinitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_support import unavailable
from starlette.testclient import TestClient

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fhir-r4"
R4 = "http://hl7.org/fhir/SearchParameter/"


def cited(client: TestClient) -> dict[str, set[tuple[str, str]]]:
    """definition URL -> the (resource type, parameter name) pairs that cite it."""
    rest = client.get("/fhir/metadata").json()["rest"][0]
    out: dict[str, set[tuple[str, str]]] = {}
    for resource in rest["resource"]:
        for param in resource.get("searchParam", []):
            assert "definition" in param, (resource["type"], param["name"])
            out.setdefault(param["definition"], set()).add((resource["type"], param["name"]))
    return out


def search(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/fhir/SearchParameter", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def test_every_cited_definition_is_the_specification_s_and_resolves(client: TestClient) -> None:
    bundle = SPEC / "search-parameters.json"
    if not bundle.is_file():
        unavailable(f"the FHIR R4 definitions ({bundle}) are not here")
    spec = {e["resource"]["url"]: e["resource"]
            for e in json.loads(bundle.read_text(encoding="utf-8"))["entry"]}  # fmt: skip
    definitions = cited(client)
    assert len(definitions) > 1300
    urls = sorted(definitions)
    for start in range(0, len(urls), 100):  # by url, 100 at a time
        batch = urls[start : start + 100]
        found = search(client, url=",".join(batch), _count="1000")
        assert sorted(d["url"] for d in found) == batch
        for d in found:
            assert d == spec[d["url"]]
            types = {t for t, _ in definitions[d["url"]]}
            common = bool(set(d["base"]) & {"Resource", "DomainResource"})
            assert common or types <= set(d["base"]), d["url"]
            assert {n for _, n in definitions[d["url"]]} == {d["code"]}
    for url in (R4 + "clinical-code", R4 + "Resource-profile", R4 + "Patient-active"):
        read = client.get(f"/fhir/SearchParameter/{url.removeprefix(R4)}")
        assert read.status_code == 200 and read.json() == spec[url]


def test_official_urls_for_shared_and_common_parameters(client: TestClient) -> None:
    """Observation's `code` is the shared `clinical-code`, `_profile` is `Resource-profile`:
    not `Observation-code`, `Resource_profile` (which the specification does not have)."""
    observation = next(r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]
                       if r["type"] == "Observation")  # fmt: skip
    by_name = {p["name"]: p.get("definition") for p in observation["searchParam"]}
    assert by_name["code"] == R4 + "clinical-code"
    assert by_name["_profile"] == R4 + "Resource-profile"
    assert by_name["_id"] == R4 + "Resource-id"
    assert by_name["value-quantity"] == R4 + "Observation-value-quantity"
    assert client.get("/fhir/SearchParameter/Observation-code").status_code == 404
    found = search(client, base="Observation", code="code")
    assert [d["id"] for d in found] == ["clinical-code"]
    assert "Observation" in found[0]["base"] and "Condition" in found[0]["base"]
    assert {d["code"] for d in search(client, base="Observation")} >= {"code", "value-quantity"}
    # a bare listing does not put 1,374 definitions on one page
    assert search(client) == []


def test_stored_search_parameters_come_first(client: TestClient) -> None:
    builtin = client.get("/fhir/SearchParameter/Patient-active").json()
    mine = {**builtin, "description": "the operator's copy"}
    assert client.put("/fhir/SearchParameter/Patient-active", json=mine).status_code == 201
    assert client.get("/fhir/SearchParameter/Patient-active").json()["description"] == (
        "the operator's copy"
    )
    found = search(client, url=R4 + "Patient-active")
    assert [d["description"] for d in found] == ["the operator's copy"]
    assert client.delete("/fhir/SearchParameter/Patient-active").status_code in (200, 204)
    assert client.get("/fhir/SearchParameter/Patient-active").json() == builtin
