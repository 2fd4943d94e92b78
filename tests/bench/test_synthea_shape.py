"""The Synthea-shaped ingest workload (bench/synthea.py) is what it claims to be, and the server
takes it: so the benchmark figure cannot silently rot into measuring errors or a toy.

Run on SQLite and PostgreSQL through the `client` fixture: the shared Organization, Location
and Practitioner Bundles first, then patient Bundles; every entry must succeed, every
conditional reference must end up as a plain `Type/id` of the resource it names, and loading
the shared Bundles again must create nothing (they are conditional creates).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synthea  # noqa: E402

HEADERS = {"Content-Type": "application/fhir+json"}
PATIENTS = 2


@pytest.fixture(scope="module")
def workload() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return synthea.generate(seed=7, patients=PATIENTS)


def _post(client: TestClient, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    assert body["type"] == "transaction-response"
    entries: list[dict[str, Any]] = body["entry"]
    assert len(entries) == len(bundle["entry"])
    return entries


def _all(client: TestClient, res_type: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{res_type}", params={"_count": 1000})
    assert response.status_code == 200, response.text[:500]
    return [e["resource"] for e in response.json().get("entry", [])]


def test_generator_is_deterministic_and_synthea_shaped(
    workload: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    shared, bundles = workload
    assert synthea.generate(seed=7, patients=PATIENTS) == workload
    assert synthea.generate(seed=8, patients=PATIENTS)[1] != bundles
    for bundle in bundles:
        assert bundle["type"] == "transaction"
        kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
        for kind in ("Encounter", "Condition", "Observation", "Procedure", "MedicationRequest",
                     "Immunization", "Claim", "ExplanationOfBenefit"):  # fmt: skip
            assert kinds[kind] > 0, kind
        assert kinds["Patient"] == 1
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
            assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
        refs = synthea.conditional_references(bundle)
        assert 350 <= len(refs) <= 550, len(refs)
        assert any(r.startswith(f"Practitioner?identifier={synthea.NPI}|") for r in refs)
        assert any(r.startswith(f"Organization?identifier={synthea.SYNTHEA}|") for r in refs)
        assert any(r.startswith(f"Location?identifier={synthea.SYNTHEA}|") for r in refs)
        codes = [
            c for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
            for c in e["resource"]["code"]["coding"]
        ]  # fmt: skip
        assert codes and all(c["system"] == synthea.LOINC for c in codes)
    for bundle in shared:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] != "PractitionerRole":
                assert entry["request"]["ifNoneExist"].startswith("identifier=")


def test_server_ingests_synthea_bundles_and_resolves_conditional_references(
    client: TestClient, workload: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    shared, bundles = workload
    for bundle in shared:
        assert all(e["response"]["status"].startswith("201") for e in _post(client, bundle))
    for bundle in bundles:
        assert all(e["response"]["status"].startswith("201") for e in _post(client, bundle))

    sent = Counter(e["resource"]["resourceType"] for b in shared + bundles for e in b["entry"])
    for res_type, count in sent.items():
        assert len(_all(client, res_type)) == count, res_type

    # Every conditional reference now names the one resource with that identifier.
    ids = {
        (r["resourceType"], i["system"], i["value"]): r["id"]
        for res_type in ("Practitioner", "Organization", "Location")
        for r in _all(client, res_type)
        for i in r["identifier"]
    }
    expected = Counter()
    for bundle in bundles:
        for ref in synthea.conditional_references(bundle):
            res_type, _, query = ref.partition("?identifier=")
            system, _, value = query.partition("|")
            expected[f"{res_type}/{ids[(res_type, system, value)]}"] += 1
    stored = Counter()
    for res_type in sent:
        for resource in _all(client, res_type):
            for ref in synthea._references(resource):
                assert "?" not in ref, f"unresolved conditional reference {ref} in {res_type}"
                assert not ref.startswith("urn:uuid:"), f"unresolved {ref} in {res_type}"
                if ref.startswith(("Practitioner/", "Organization/", "Location/")):
                    stored[ref] += 1
    # (PractitionerRole.practitioner was a urn:uuid, not a conditional reference)
    roles = Counter(r["practitioner"]["reference"] for r in _all(client, "PractitionerRole"))
    assert stored - roles >= expected, "a conditional reference did not resolve to its target"

    # The shared Bundles are conditional creates: loading them again creates nothing.
    again = _post(client, shared[0])
    assert all(e["response"]["status"].startswith("200") for e in again)
    assert len(_all(client, "Organization")) == sent["Organization"]
