"""Every operation the CapabilityStatement declares names an OperationDefinition that resolves
on this server (`GET OperationDefinition/{id}`, `GET OperationDefinition?url=`): the official
R4 ones as the specification has them, the server's own ones valid R4; stored
OperationDefinitions keep working and come first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_support import unavailable
from starlette.testclient import TestClient

from fhir_server.validation import validate

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fhir-r4"


def declared(client: TestClient) -> dict[str, set[str]]:
    """definition URL -> the operation names (code) that cite it, system and type level."""
    rest = client.get("/fhir/metadata").json()["rest"][0]
    out: dict[str, set[str]] = {}
    for holder in [rest, *rest["resource"]]:
        for op in holder.get("operation", []):
            out.setdefault(op["definition"], set()).add(op["name"])
    return out


def by_url(client: TestClient, url: str) -> list[dict[str, Any]]:
    response = client.get("/fhir/OperationDefinition", params={"url": url})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def test_every_declared_operation_definition_resolves(client: TestClient) -> None:
    definitions = declared(client)
    expected = {"validate", "everything", "expand", "validate-code", "lookup", "subsumes",
                "translate", "export", "import"}  # fmt: skip
    assert expected <= {n for names in definitions.values() for n in names}
    for url, names in definitions.items():
        found = by_url(client, url)
        assert [d["url"] for d in found] == [url], url
        definition = found[0]
        assert {definition["code"]} == names, url
        read = client.get(f"/fhir/OperationDefinition/{definition['id']}")
        assert read.status_code == 200 and read.json() == definition
        problems = [i.text for i in validate(definition) if i.severity == "error"]
        assert problems == [], (url, problems)
    # an R4 operation the server does not implement has no definition here
    assert client.get("/fhir/OperationDefinition/Observation-lastn").status_code == 404
    assert by_url(client, "http://hl7.org/fhir/OperationDefinition/Observation-lastn") == []


def test_the_r4_definitions_are_the_specification_s(client: TestClient) -> None:
    bundle = SPEC / "profiles-resources.json"
    if not bundle.is_file():
        unavailable(f"the FHIR R4 definitions ({bundle}) are not here")
    spec = {e["resource"]["url"]: e["resource"]
            for e in json.loads(bundle.read_text(encoding="utf-8"))["entry"]}  # fmt: skip
    r4 = [u for u in declared(client) if u.startswith("http://hl7.org/fhir/OperationDefinition/")]
    assert len(r4) == 7
    for url in r4:
        assert by_url(client, url) == [spec[url]]


def test_own_definitions_say_what_the_operations_take(client: TestClient) -> None:
    urls = [u for u in declared(client) if u.startswith("urn:interop:operation:")]
    assert urls, "the bulk operations are the server's own"
    export = client.get("/fhir/OperationDefinition/Patient-bulk-export").json()
    assert export["url"] in urls
    assert export["base"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
    assert (export["system"], export["type"], export["instance"]) == (False, True, False)
    assert {"_since", "_type", "_typeFilter", "patient"} <= {p["name"] for p in export["parameter"]}
    found = client.get("/fhir/OperationDefinition", params={"code": "import"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["bulk-import"]
    # _elements and _summary apply to them as to stored resources
    brief = client.get("/fhir/OperationDefinition/bulk-import", params={"_elements": "code"})
    assert set(brief.json()) <= {"resourceType", "id", "meta", "code"}
    counted = client.get("/fhir/OperationDefinition", params={"_summary": "count"}).json()
    assert counted["total"] == len(declared(client)) and "entry" not in counted


def test_stored_definitions_are_written_and_come_first(client: TestClient) -> None:
    url = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
    builtin = by_url(client, url)[0]
    mine = {**builtin, "description": "the operator's copy"}
    mine.pop("text", None)
    assert client.put("/fhir/OperationDefinition/ValueSet-expand", json=mine).status_code == 201
    assert client.get("/fhir/OperationDefinition/ValueSet-expand").json()["description"] == (
        "the operator's copy"
    )
    assert [d["description"] for d in by_url(client, url)] == ["the operator's copy"]
    # an operator's own definition, created and searched like any resource
    other = {**mine, "id": None, "url": "http://example.org/OperationDefinition/x", "code": "x"}
    other.pop("id")
    created = client.post("/fhir/OperationDefinition", json=other)
    assert created.status_code == 201, created.text
    assert [d["code"] for d in by_url(client, other["url"])] == ["x"]
    everything = client.get("/fhir/OperationDefinition").json()
    assert everything["total"] == len(everything["entry"]) >= len(declared(client)) + 1
    assert client.delete("/fhir/OperationDefinition/ValueSet-expand").status_code in (200, 204)
    assert client.get("/fhir/OperationDefinition/ValueSet-expand").json() == builtin
