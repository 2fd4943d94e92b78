"""Decimals are kept exactly as sent (R4: precision is significant, no IEEE floats): the same
literal text comes back from every output, and search compares them as decimals."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_server import fhirjson

JSON = {"Content-Type": "application/fhir+json"}

# Literals a binary float would change (or print differently), in many shapes and places.
SHAPES = {
    "qty": "750.00",  # trailing zeros
    "long": "66.899999999999991",  # more digits than a double holds
    "big": "12345678901234567.8",
    "exp": "1.0e3",  # exponent, as written
    "neg": "-0.050",
    "tiny": "1E-7",
    "comp": "120.10",
    "ext": "3.1400",
    "contained": "0.10",
    "range_low": "2.50",
}


def observation(obs_id: str, subject: str = "Patient/p1") -> bytes:
    """An Observation in raw JSON text, so the literals are exactly ours (not a float's)."""
    s = SHAPES
    return f"""{{
  "resourceType": "Observation", "id": "{obs_id}", "status": "final",
  "code": {{"coding": [{{"system": "http://loinc.org", "code": "29463-7"}}]}},
  "subject": {{"reference": "{subject}"}},
  "contained": [{{"resourceType": "Medication", "id": "m",
                  "amount": {{"numerator": {{"value": {s["contained"]}}},
                             "denominator": {{"value": 1}}}}}}],
  "focus": [{{"reference": "#m"}}],
  "extension": [{{"url": "http://example.org/pi", "valueDecimal": {s["ext"]}}},
                {{"url": "http://example.org/n", "valueDecimal": {s["neg"]}}}],
  "valueQuantity": {{"value": {s["qty"]}, "unit": "g", "system": "http://unitsofmeasure.org",
                     "code": "g"}},
  "referenceRange": [{{"low": {{"value": {s["range_low"]}}}, "high": {{"value": {s["exp"]}}}}}],
  "component": [
    {{"code": {{"text": "a"}}, "valueQuantity": {{"value": {s["comp"]}}}}},
    {{"code": {{"text": "b"}}, "valueQuantity": {{"value": {s["long"]}}}}},
    {{"code": {{"text": "c"}}, "valueQuantity": {{"value": {s["big"]}}}}},
    {{"code": {{"text": "d"}}, "valueQuantity": {{"value": {s["tiny"]}}}}}
  ]
}}""".encode()


def assert_kept(raw: bytes | str, where: str, expected: int = 1) -> None:
    """Every literal appears, as written, `expected` times in the raw response text."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    for name, literal in SHAPES.items():
        found = len(re.findall(rf"(?<![0-9.eE+-]){re.escape(literal)}(?![0-9eE])", text))
        assert found == expected, f"{where}: {name} {literal} found {found} times in {text[:400]}"


@pytest.fixture
def stored(client: TestClient) -> TestClient:
    assert client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"}).is_success
    response = client.put("/fhir/Observation/o1", content=observation("o1"), headers=JSON)
    assert response.status_code == 201, response.text
    assert_kept(response.content, "update response")
    return client


def test_read_vread_history_keep_every_literal(stored: TestClient) -> None:
    assert_kept(stored.get("/fhir/Observation/o1").content, "read")
    assert_kept(stored.get("/fhir/Observation/o1/_history/1").content, "vread")
    assert_kept(stored.get("/fhir/Observation/o1/_history").content, "instance history")
    assert_kept(stored.get("/fhir/Observation/_history").content, "type history")
    assert_kept(stored.get("/fhir/_history").content, "system history")


def test_create_and_searches_keep_every_literal(stored: TestClient) -> None:
    created = stored.post("/fhir/Observation", content=observation("x"), headers=JSON)
    assert created.status_code == 201
    assert_kept(created.content, "create response")
    assert_kept(stored.get("/fhir/Observation?_id=o1").content, "search")
    assert_kept(
        stored.get("/fhir/Observation?_id=o1&_include=Observation:subject").content, "_include"
    )
    assert_kept(
        stored.get("/fhir/Patient?_id=p1&_revinclude=Observation:subject").content,
        "_revinclude",
        expected=2,
    )
    shaped = stored.get("/fhir/Observation?_id=o1&_elements=valueQuantity,component").content
    assert b"750.00" in shaped and b"66.899999999999991" in shaped and b"1E-7" in shaped
    assert b"3.1400" not in shaped  # the extension was left out
    assert_kept(stored.get("/fhir/Observation?_id=o1&_summary=data").content, "_summary=data")
    summary = stored.get("/fhir/Observation?_id=o1&_summary=true").content
    assert b'"value":750.00' in summary
    assert_kept(stored.post("/fhir/Observation/_search", data={"_id": "o1"}).content, "_search")


def test_everything_and_compartment_keep_every_literal(stored: TestClient) -> None:
    assert_kept(stored.get("/fhir/Patient/p1/$everything").content, "$everything")
    assert_kept(stored.get("/fhir/Patient/p1/Observation").content, "compartment search")


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundles_keep_every_literal(client: TestClient, kind: str) -> None:
    entries = ",".join(
        f'{{"resource": {observation(f"b{i}").decode()},'
        f' "request": {{"method": "PUT", "url": "Observation/b{i}"}}}}'
        for i in range(2)
    )
    body = f'{{"resourceType": "Bundle", "type": "{kind}", "entry": [{entries}]}}'
    minimal = client.post("/fhir", content=body, headers=JSON)
    assert minimal.status_code == 200, minimal.text
    full = client.post("/fhir", content=body, headers={**JSON, "Prefer": "return=representation"})
    assert full.status_code == 200
    assert_kept(full.content, f"{kind} response", expected=2)
    assert_kept(client.get("/fhir/Observation/b1").content, f"read after {kind}")


def test_json_patch_keeps_the_other_literals_and_adds_its_own(stored: TestClient) -> None:
    patch = b'[{"op": "replace", "path": "/valueQuantity/value", "value": 0.500},' \
            b' {"op": "add", "path": "/component/0/valueQuantity/unit", "value": "g"}]'  # fmt: skip
    response = stored.patch(
        "/fhir/Observation/o1",
        content=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    text = stored.get("/fhir/Observation/o1").content
    assert b'"value":0.500' in text
    for name in ("long", "big", "exp", "neg", "tiny", "comp", "ext", "contained", "range_low"):
        assert SHAPES[name].encode() in text, name
    merge = stored.patch(
        "/fhir/Observation/o1",
        content=b'{"valueQuantity": {"value": 9.90, "unit": "g"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merge.status_code == 200, merge.text
    assert b'"value":9.90' in stored.get("/fhir/Observation/o1").content


def test_decimal_search_uses_the_precision_of_the_search_value(stored: TestClient) -> None:
    def found(query: str) -> set[str]:
        bundle = stored.get(f"/fhir/Observation?{query}").json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    stored.put("/fhir/Observation/o2", content=observation("o2"), headers=JSON)
    low = observation("o3").replace(b'"value": 750.00', b'"value": 749.996')
    assert stored.put("/fhir/Observation/o3", content=low, headers=JSON).status_code == 201
    assert found("value-quantity=750") == {"o1", "o2", "o3"}  # [749.5, 750.5)
    assert found("value-quantity=750.00") == {"o1", "o2", "o3"}  # [749.995, 750.005)
    assert found("value-quantity=750.000") == {"o1", "o2"}  # [749.9995, 750.0005)
    assert found("value-quantity=ge750.00") == {"o1", "o2"}  # ge/gt/lt: the value itself
    assert found("value-quantity=ge749.996") == {"o1", "o2", "o3"}
    assert found("value-quantity=gt750") == set()
    assert found("value-quantity=lt750") == {"o3"}
    assert found("value-quantity=750.00|http://unitsofmeasure.org|g") == {"o1", "o2", "o3"}
    assert found("component-value-quantity=120.1") == {"o1", "o2", "o3"}
    assert found("component-value-quantity=1e-7") == {"o1", "o2", "o3"}
    assert found("component-value-quantity=66.9") == {"o1", "o2", "o3"}
    assert found("component-value-quantity=66.8") == set()


def test_malformed_and_out_of_range_numbers_are_refused(client: TestClient) -> None:
    for bad in (b"NaN", b"Infinity", b"1.", b".5", b"01.5", b"1.5.5"):
        body = b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"},' \
               b' "valueQuantity": {"value": ' + bad + b"}}"  # fmt: skip
        response = client.post("/fhir/Observation", content=body, headers=JSON)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


def test_fhirjson_keeps_text_and_compares_as_decimal() -> None:
    doc = fhirjson.loads(b'{"a": [1.50, 1e3, -0.0, 7, "2.5", 123456789012345678901234]}')
    assert fhirjson.dumps(doc) == b'{"a":[1.50,1e3,-0.0,7,"2.5",123456789012345678901234]}'
    first: Any = doc["a"][0]
    assert first == fhirjson.FhirDecimal("1.5") and str(first) == "1.50"
    assert orjson.loads(fhirjson.dumps(doc))["a"][0] == 1.5
    plain = fhirjson.loads(b'{"system": "urn:oid:2.16.840.1.113883", "n": [3, {"m": 2.0}]}')
    assert plain["system"] == "urn:oid:2.16.840.1.113883" and plain["n"][0] == 3
    assert str(plain["n"][1]["m"]) == "2.0"
    assert str(fhirjson.loads(b"[1e400]")[0]) == "1e400"  # kept, though no double holds it
    with pytest.raises(ValueError):
        fhirjson.loads(b'{"a": 1.}')
