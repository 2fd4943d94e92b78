"""Resource exhaustion and 5xx (issue 12, class 8): bounded work per request, 4xx for the rest.

Every test is an attack over HTTP, on SQLite and PostgreSQL (the `client` fixture). The limits
are those of `fhir_server.limits`, named by INTEROP_MAX_* settings; a test that needs a tighter
limit sets it with `tight_limits` and the defaults come back afterwards.
"""

from __future__ import annotations

import json
import random
import string
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event
from starlette.testclient import TestClient

from fhir_server import limits
from fhir_server.store.db import statement_timeout

BASE = "http://testserver/fhir"
FHIR = {"Content-Type": "application/fhir+json"}


@contextmanager
def tight_limits(**changes: Any) -> Iterator[None]:
    saved = limits.current()
    limits.configure(replace(saved, **changes))
    try:
        yield
    finally:
        limits.configure(saved)


def _outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]  # type: ignore[no-any-return]


def _create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert response.status_code == 201, response.text[:500]
    return response.json()  # type: ignore[no-any-return]


def _random_text(n: int, seed: int) -> str:
    """Incompressible text: a B-tree on the whole value could not hold it (PostgreSQL)."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits + " ") for _ in range(n))


# -- patches ---------------------------------------------------------------------------------


def test_json_patch_copy_bomb_is_refused_early_with_little_memory(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "name": [{"family": "x" * 1300}]})
    bomb = [{"op": "copy", "from": "/name", "path": "/name/0"} for _ in range(20)]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = client.patch(
            f"/fhir/Patient/{patient['id']}",
            content=json.dumps(bomb),
            headers={"Content-Type": "application/json-patch+json"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    issue = _outcome(response, 422)
    assert issue["code"] == "too-costly"
    assert peak < 64 * 1024 * 1024, f"peak {peak} bytes"  # 2^20 copies took 767 MB
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert client.get(f"/fhir/Patient/{patient['id']}").json()["meta"]["versionId"] == "1"


def test_json_patch_copy_bomb_inside_a_transaction_is_refused(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "name": [{"family": "x" * 1300}]})
    import base64

    bomb = [{"op": "copy", "from": "/name", "path": "/name/0"} for _ in range(20)]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(json.dumps(bomb).encode()).decode(),
                },
                "request": {"method": "PATCH", "url": f"Patient/{patient['id']}"},
            }
        ],
    }
    started = time.perf_counter()
    response = client.post("/fhir", json=bundle, headers=FHIR)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert time.perf_counter() - started < 10


def test_json_patch_with_too_many_operations_is_refused(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "active": True})
    ops = [{"op": "test", "path": "/active", "value": True}] * 1001
    response = client.patch(
        f"/fhir/Patient/{patient['id']}",
        content=json.dumps(ops),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert _outcome(response, 422)["code"] == "too-costly"


def test_merge_patch_cannot_nest_past_the_depth_limit(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "active": True})
    deep: dict[str, Any] = {"url": "http://x", "valueString": "v"}
    for _ in range(400):
        deep = {"url": "http://x", "extension": [deep]}
    response = client.patch(
        f"/fhir/Patient/{patient['id']}",
        content=json.dumps({"extension": [deep]}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    _outcome(response, 400)


# -- nesting, size, counts -------------------------------------------------------------------


def _nested_extensions(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(depth):
        inner = {"url": "http://example.org/x", "extension": [inner]}
    return inner


def test_extensions_nested_400_deep_are_a_400(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "extension": [_nested_extensions(400)]}
    issue = _outcome(client.post("/fhir/Patient", json=patient, headers=FHIR), 400)
    assert "nested deeper" in issue["diagnostics"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}],
    }
    _outcome(client.post("/fhir", json=bundle, headers=FHIR), 400)


def test_json_deeper_than_the_parser_allows_is_a_400(client: TestClient) -> None:
    body = '{"resourceType":"Patient","extension":' + "[" * 3000 + "]" * 3000 + "}"
    _outcome(client.post("/fhir/Patient", content=body, headers=FHIR), 400)


def test_reasonable_nesting_is_still_stored(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "extension": [_nested_extensions(20)]}
    assert client.post("/fhir/Patient", json=patient, headers=FHIR).status_code == 201


def test_a_50_mb_body_is_a_413_before_it_is_parsed(client: TestClient) -> None:
    family = "x" * (50 * 1024 * 1024)
    body = '{"resourceType":"Patient","name":[{"family":"' + family + '"}]}'
    issue = _outcome(client.post("/fhir/Patient", content=body, headers=FHIR), 413)
    assert issue["code"] == "too-costly"
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_a_declared_oversized_body_is_refused_without_reading_it(client: TestClient) -> None:
    with tight_limits(max_body_bytes=1024):
        response = client.post(
            "/fhir/Patient",
            content=b'{"resourceType":"Patient"}' + b" " * 2048,
            headers=FHIR,
        )
    _outcome(response, 413)


def test_a_resource_with_100000_identifiers_is_refused(client: TestClient) -> None:
    identifiers = [{"system": "urn:x", "value": str(i)} for i in range(100_000)]
    patient = {"resourceType": "Patient", "identifier": identifiers}
    issue = _outcome(client.post("/fhir/Patient", json=patient, headers=FHIR), 413)
    assert issue["code"] == "too-costly"
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_array_limit_holds_for_resources_inside_a_bundle(client: TestClient) -> None:
    with tight_limits(max_array_items=100):
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:x", "value": str(i)} for i in range(101)],
        }
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}],
        }
        response = client.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code in (200, 413)
    if response.status_code == 200:
        status = response.json()["entry"][0]["response"]["status"]
        assert status.startswith("413"), status


# -- numbers ---------------------------------------------------------------------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "url",
    [
        f"/fhir/Patient?_offset={HUGE}",
        f"/fhir/Patient?name=a&_offset={HUGE}",
        f"/fhir/Patient?_count={HUGE}",
        "/fhir/Patient?_count=%C2%B2",  # a superscript two: a "digit" int() refuses
        "/fhir/Patient?_offset=-1",
        f"/fhir/Patient/_history?_offset={HUGE}",
        f"/fhir/_history?_offset={HUGE}",
        f"/fhir/_history?_count={HUGE}",
        "/fhir/Observation?value-quantity=1e999999999",
        "/fhir/Observation?value-quantity=gt-1e999999999",
        "/fhir/Observation?value-quantity=NaN",
        "/fhir/Observation?value-quantity=Infinity",
        "/fhir/Observation?value-quantity=ap1e400|http://unitsofmeasure.org|mg",
        "/fhir/RiskAssessment?probability=1e999999999",
        "/fhir/RiskAssessment?probability=sNaN",
        "/fhir/Patient?birthdate=0000-01-01",
        "/fhir/Patient?birthdate=2020-13-01",
        "/fhir/Patient?birthdate=99999-01-01",
        "/fhir/Patient?_lastUpdated=gt2020-02-30",
        "/fhir/_history?_since=99999-01-01T00:00:00Z",
        "/fhir/Patient/_history?_since=2020-01-01T25:00:00Z",
    ],
)
def test_numbers_out_of_range_are_a_400(client: TestClient, url: str) -> None:
    _outcome(client.get(url), 400)


def test_huge_offset_on_instance_history_and_version_ids(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "active": True})
    _outcome(client.get(f"/fhir/Patient/{patient['id']}/_history?_offset={HUGE}"), 400)
    for version in ("9999999999999999999999", "-1", "0", "1e3", "%C2%B2"):
        response = client.get(f"/fhir/Patient/{patient['id']}/_history/{version}")
        _outcome(response, 404)
    response = client.put(
        f"/fhir/Patient/{patient['id']}",
        json={**patient, "active": False},
        headers={**FHIR, "If-Match": f'W/"{HUGE}"'},
    )
    _outcome(response, 412)


def test_tiny_and_normal_numbers_still_search(client: TestClient) -> None:
    _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "w"},
            "valueQuantity": {"value": 5.4, "unit": "mg"},
        },
    )
    found = client.get("/fhir/Observation?value-quantity=5.4")
    assert found.status_code == 200 and found.json()["total"] == 1
    tiny = client.get("/fhir/Observation?value-quantity=1e-999999")
    assert tiny.status_code == 200 and tiny.json()["total"] == 0


# -- strings a database cannot hold ------------------------------------------------------------


def test_nul_in_a_resource_string_is_a_400(client: TestClient) -> None:
    body = '{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}'
    _outcome(client.post("/fhir/Patient", content=body, headers=FHIR), 400)
    key = '{"resourceType":"Patient","active":true,"a\\u0000":1}'
    _outcome(client.post("/fhir/Patient", content=key, headers=FHIR), 400)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": "a\u0000b"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    _outcome(client.post("/fhir", json=bundle, headers=FHIR), 400)


def test_lone_surrogate_in_a_resource_string_is_a_400(client: TestClient) -> None:
    body = '{"resourceType":"Patient","name":[{"family":"a\\ud800b"}]}'
    _outcome(client.post("/fhir/Patient", content=body, headers=FHIR), 400)


def test_nul_in_search_values_and_urls_is_a_400(client: TestClient) -> None:
    patient = _create(client, {"resourceType": "Patient", "active": True})
    for url in (
        "/fhir/Patient?name=a%00b",
        "/fhir/Patient?identifier=sys%00|v",
        "/fhir/Patient?_id=a%00",
        "/fhir/Observation?subject=Patient/a%00",
        "/fhir/Observation?subject:Patient.name=a%00",
        "/fhir/Patient?_has:Observation:subject:code=a%00",
        "/fhir/ValueSet?url=http://x%00",
        "/fhir/Patient?birthdate=2020%00",
        "/fhir/Patient/a%00b",
        "/fhir/Patient/a%00b/_history",
        f"/fhir/Patient/{patient['id']}/_history/1%00",
    ):
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    response = client.post(
        "/fhir/Patient/_search",
        content=b"name=a%00b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _outcome(response, 400)
    response = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR, "If-None-Exist": "identifier=a%00b"},
    )
    _outcome(response, 400)


# -- long strings are stored and found --------------------------------------------------------


def test_long_strings_are_stored_and_found_by_every_string_and_token_search(
    client: TestClient,
) -> None:
    long_value = _random_text(5000, 1)
    long_text = _random_text(5000, 2)
    long_display = _random_text(5000, 3)
    long_code = _random_text(300, 4).replace(" ", "-")
    observation = _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "text": long_text,
                "coding": [{"system": "urn:long", "code": long_code, "display": long_display}],
            },
            "valueString": long_value,
        },
    )
    _create(  # same prefixes, different ends: the long tests must tell them apart
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "urn:long", "code": long_code[:200] + "-other"}]},
            "valueString": long_value[:4000] + "different end",
        },
    )

    def ids(params: dict[str, str]) -> list[str]:
        response = client.get("/fhir/Observation", params=params)
        assert response.status_code == 200, response.text[:300]
        return [e["resource"]["id"] for e in response.json().get("entry", [])]

    mine = [observation["id"]]
    assert ids({"value-string:exact": long_value}) == mine
    assert ids({"value-string:contains": long_value[4200:4800]}) == mine
    assert ids({"value-string": long_value[:4500]}) == mine
    assert len(ids({"value-string": long_value[:300]})) == 2
    assert ids({"code:text": long_text[:3000]}) == mine
    assert ids({"code": f"urn:long|{long_code}"}) == mine
    assert ids({"code": long_code}) == mine
    assert ids({"code": f"urn:long|{long_code[:128]}"}) == []
    display_only = client.get("/fhir/Observation", params={"code:text": long_display[:200]})
    assert display_only.status_code == 200


def test_long_description_and_identifier_are_stored_and_found(client: TestClient) -> None:
    description = _random_text(5000, 5)
    value_set = _create(
        client,
        {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://example.org/" + "p" * 3000,
            "description": description,
        },
    )
    response = client.get("/fhir/ValueSet", params={"description:exact": description})
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [value_set["id"]]
    response = client.get("/fhir/ValueSet", params={"url": "http://example.org/" + "p" * 3000})
    assert response.json()["total"] == 1
    response = client.get(
        "/fhir/ValueSet", params={"url:above": "http://example.org/" + "p" * 3000 + "/sub"}
    )
    assert response.json()["total"] == 1
    value = _random_text(4000, 6).replace(" ", "")
    patient = _create(
        client, {"resourceType": "Patient", "identifier": [{"system": "urn:sys", "value": value}]}
    )
    response = client.get("/fhir/Patient", params={"identifier": f"urn:sys|{value}"})
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [patient["id"]]
    conditional = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR, "If-None-Exist": f"identifier=urn:sys|{value}"},
    )
    assert conditional.status_code == 200 and conditional.json()["id"] == patient["id"]


def test_a_reference_with_an_overlong_id_is_stored(client: TestClient) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/" + "a" * 200},
    }
    assert client.post("/fhir/Observation", json=observation, headers=FHIR).status_code == 201


# -- bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_duplicate_full_url_in_a_bundle_is_a_400(client: TestClient, kind: str) -> None:
    full_url = "urn:uuid:6f0e5a1c-0b8e-4a39-9d3c-2d3f9d1b2c11"
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": full_url,
                "resource": {"resourceType": "Patient", "name": [{"family": name}]},
                "request": {"method": "POST", "url": "Patient"},
            }
            for name in ("A", "B")
        ]
        + [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": full_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    issue = _outcome(client.post("/fhir", json=bundle, headers=FHIR), 400)
    assert full_url in issue["diagnostics"]
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


# -- searches --------------------------------------------------------------------------------


def test_300_anded_search_parameters_are_refused_quickly(client: TestClient) -> None:
    params = [("name:contains", f"x{i}") for i in range(300)]
    started = time.perf_counter()
    issue = _outcome(client.get("/fhir/Patient", params=params), 400)
    assert issue["code"] == "too-costly"
    assert time.perf_counter() - started < 2
    form = "&".join(f"name:contains=x{i}" for i in range(300)).encode()
    response = client.post(
        "/fhir/Patient/_search",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _outcome(response, 400)
    condition = "&".join(f"name=x{i}" for i in range(300))
    response = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR, "If-None-Exist": condition},
    )
    _outcome(response, 400)
    response = client.delete("/fhir/Patient?" + condition)
    _outcome(response, 400)


def test_too_many_or_values_are_refused(client: TestClient) -> None:
    values = ",".join(f"v{i}" for i in range(1000))
    _outcome(client.get("/fhir/Patient", params={"identifier": values}), 400)
    _outcome(client.get("/fhir/Patient", params={"_id": values}), 400)


def test_a_search_within_the_limits_still_works(client: TestClient) -> None:
    _create(client, {"resourceType": "Patient", "name": [{"family": "Limit"}]})
    params = [("name", "Limit")] * 20 + [("_count", "10")]
    response = client.get("/fhir/Patient", params=params)
    assert response.status_code == 200 and response.json()["total"] == 1


@pytest.fixture
def one_ms_statements(app: Any) -> Iterator[None]:
    """Statements may run 1 ms: PostgreSQL's statement_timeout on new pooled connections (set
    after start-up, which itself needs more), SQLite's deadline from the request limits."""
    engine = app.state.store.engine
    listener = statement_timeout(1)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", listener)
        engine.dispose()
    try:
        with tight_limits(statement_timeout_ms=1):
            yield
    finally:
        if engine.dialect.name == "postgresql":
            event.remove(engine, "connect", listener)
            engine.dispose()


def test_statement_timeout_turns_a_slow_search_into_a_clean_error(
    client: TestClient, request: pytest.FixtureRequest
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": f"family{i}", "given": [f"given{i}", "second"]}],
                    "address": [{"city": f"city{i}", "line": [f"{i} long street"]}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(2000)
        ],
    }
    assert client.post("/fhir", json=bundle, headers=FHIR).status_code == 200
    params = [(p, "i") for p in ("name:contains", "address:contains", "given:contains")] * 10
    params.append(("_sort", "-name"))
    assert client.get("/fhir/Patient", params=params[:3]).status_code == 200
    request.getfixturevalue("one_ms_statements")
    issue = _outcome(client.get("/fhir/Patient", params=params), 503)
    assert issue["code"] == "too-costly"
    # the server goes on: the next requests are served
    assert client.get("/fhir/Patient", params={"_id": "x"}).status_code in (200, 503)
    assert client.get("/fhir/metadata").status_code == 200


# -- $bulk-upload ----------------------------------------------------------------------------


def test_bulk_upload_is_streamed_within_its_own_limit(client: TestClient) -> None:
    line = json.dumps({"resourceType": "Patient", "active": True}).encode() + b"\n"
    ndjson = {"Content-Type": "application/fhir+ndjson"}
    with tight_limits(max_upload_bytes=64 * 1024, max_body_bytes=1024):
        too_big = client.post("/fhir/$bulk-upload", content=line * 4000, headers=ndjson)
        _outcome(too_big, 413)
        fits = client.post("/fhir/$bulk-upload", content=line * 100, headers=ndjson)
    assert fits.status_code == 201, fits.text  # larger than the FHIR body limit: its own
    location = fits.headers["Location"]
    downloaded = client.get(location.removeprefix("http://testserver"))
    assert downloaded.status_code == 200 and downloaded.content == line * 100
    _outcome(client.post("/fhir/$bulk-upload", content=b"  \n ", headers=ndjson), 400)
