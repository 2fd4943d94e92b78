"""Every sample in examples/ goes through the path the README sends it through: HL7 files over
the real MLLP listener (`interop hl7 send`), the NDJSON file through `interop import`, the
transaction Bundle through `POST /fhir`, the SMART app registration through `/auth/register`."""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.cli import main as interop_main
from interop.settings import Settings, get_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[TestClient, int]]:
    """The app with its MLLP listener on a real port, on an emptied database."""
    port = free_port()
    app = create_app(Settings(database_url=database_url, auth="off", mllp_port=port),
                     channels=True)  # fmt: skip
    clear_tables(app.state.store.engine)
    with TestClient(app) as client:
        yield client, port
    clear_tables(app.state.store.engine)


def interop(database_url: str, *argv: str) -> tuple[int, dict[str, Any]]:
    saved = os.environ.get("INTEROP_DATABASE_URL")
    os.environ["INTEROP_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            status = interop_main([*argv, "--json"])
    finally:
        if saved is None:
            os.environ.pop("INTEROP_DATABASE_URL")
        else:
            os.environ["INTEROP_DATABASE_URL"] = saved
        get_settings.cache_clear()
    return status, json.loads(out.getvalue())


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    answer = client.get(f"/fhir/{query}")
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_hl7_samples_over_mllp(served: tuple[TestClient, int], database_url: str) -> None:
    client, port = served
    files = [str(EXAMPLES / "hl7" / n) for n in ("adt-a01.hl7", "adt-a08.hl7", "oru-r01.hl7")]
    status, sent = interop(database_url, "hl7", "send", *files, "--port", str(port))
    assert status == 0 and [r["code"] for r in sent["results"]] == ["AA", "AA", "AA"]
    [patient] = search(client, "Patient?identifier=urn:hl7v2:authority:DEMOHOSP|DEMO-1001")
    a08_lines = (EXAMPLES / "hl7" / "adt-a08.hl7").read_text().splitlines()
    a08 = next(line for line in a08_lines if line.startswith("PID|")).split("|")[11]  # PID-11
    assert patient["address"][0]["line"] == [a08.split("^")[0]]  # the A08's new address
    assert search(client, f"Encounter?subject=Patient/{patient['id']}")
    oru = (EXAMPLES / "hl7" / "oru-r01.hl7").read_text().splitlines()
    obx = [line.split("|") for line in oru if line.startswith("OBX")]
    for fields in obx:
        code, value = fields[3].split("^")[0], float(fields[5])
        [obs] = search(client, f"Observation?subject=Patient/{patient['id']}&code={code}")
        assert obs["valueQuantity"]["value"] == value


def test_ndjson_sample_through_import(served: tuple[TestClient, int], database_url: str) -> None:
    client, _ = served
    path = EXAMPLES / "ndjson" / "patients-and-vitals.ndjson"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    status, summary = interop(database_url, "import", str(path))
    assert status == 0 and summary["loaded"] == len(lines) and summary["failed"] == 0
    for resource in lines:
        stored = client.get(f"/fhir/{resource['resourceType']}/{resource['id']}")
        assert stored.status_code == 200
        assert stored.json().get("subject") == resource.get("subject")


def test_transaction_bundle_sample(served: tuple[TestClient, int]) -> None:
    client, _ = served
    bundle = json.loads((EXAMPLES / "bundles" / "transaction.json").read_text())
    first = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert first.status_code == 200, first.text
    assert [e["response"]["status"][:3] for e in first.json()["entry"]] == ["201"] * 3
    [patient] = search(client, "Patient?identifier=urn:interop:example:mrn|EX-2001")
    [rx] = search(client, f"MedicationRequest?subject=Patient/{patient['id']}")
    assert rx["medicationCodeableConcept"]["coding"][0]["code"] == "197361"
    again = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert [e["response"]["status"][:3] for e in again.json()["entry"]] == ["200"] * 3


def test_smart_registration_sample(served: tuple[TestClient, int]) -> None:
    client, _ = served
    registration = json.loads((EXAMPLES / "smart" / "app-registration.json").read_text())
    answer = client.post("/auth/register", json=registration)
    assert answer.status_code == 201, answer.text
    registered = answer.json()
    assert registered["client_id"] and registered["redirect_uris"] == registration["redirect_uris"]
    assert set(registered["scope"].split()) <= set(registration["scope"].split())
