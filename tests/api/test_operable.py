"""Metadata, health, metrics, request ids and the secure-by-default access policy."""

from __future__ import annotations

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from metrics_support import value
from starlette.testclient import TestClient

from fhir_server.search.registry import params_for
from interop.app import create_app
from interop.settings import Settings


def test_metadata_is_a_valid_generated_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert len(resources) >= 140
    observation = resources["Observation"]
    params = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert (
        params["subject"] == "reference"
        and params["code"] == "token"
        and params["value-quantity"] == "quantity"
    )
    assert "Provenance:target" in observation["searchRevInclude"]
    assert {i["code"] for i in body["rest"][0]["interaction"]} >= {
        "transaction",
        "batch",
        "history-system",
    }
    assert resources["Patient"]["operation"][0]["name"] == "everything"


def test_every_advertised_search_parameter_is_accepted(client: TestClient) -> None:
    """The statement is generated from the compiler's own table, so none may be refused."""
    statement = client.get("/fhir/metadata").json()
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] not in (
            "Patient",
            "Observation",
            "Encounter",
            "DiagnosticReport",
            "ImagingStudy",
        ):
            continue
        for param in resource["searchParam"]:
            examples = {
                "token": "x",
                "string": "x",
                "date": "2020",
                "reference": "Patient/1",
                "quantity": "1",
                "number": "1",
                "uri": "http://x",
            }
            if param["type"] == "composite":  # one value per component, `$`-separated
                parts = params_for(resource["type"])[param["name"]].components
                value = "$".join(examples[kind] for _, kind, _ in parts)
            else:
                value = examples[param["type"]]
            response = client.get(
                f"/fhir/{resource['type']}",
                params={param["name"]: value, "_summary": "count"},
                headers={"Prefer": "handling=strict"},
            )
            assert response.status_code == 200, (resource["type"], param["name"], response.text)


def test_health_ready_metrics(client: TestClient, database_url: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["services"]["outbox-runner"]["status"] == "ok"
    client.post("/fhir/Patient", json={"resourceType": "Patient"})
    client.get("/fhir/Patient/nope")
    assert client.get("/metrics").status_code == 404  # closed unless the operator opens it
    opened = create_app(
        Settings(
            database_url=database_url, auth="off", base_url="http://testserver/fhir", metrics="on"
        ),
        migrate=False,
    )
    with TestClient(opened) as scraper:
        text = scraper.get("/metrics").text
    opened.state.store.engine.dispose()
    created = {"interaction": "create", "type": "Patient", "status": "201"}
    assert value(text, "fhir_requests_total", **created) >= 1
    assert value(text, "fhir_requests_total", status="404") >= 1
    assert value(text, "fhir_request_duration_seconds_count", interaction="create") >= 1
    assert value(text, "store_transactions_total", outcome="commit") >= 1


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert (
        client.get("/fhir/metadata", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    assert len(client.get("/fhir/metadata").headers["X-Request-ID"]) == 32


def test_auth_is_on_by_default(database_url: str) -> None:
    settings = Settings(database_url=database_url, base_url="http://testserver/fhir")
    assert settings.auth == "on"
    with TestClient(create_app(settings)) as secured:
        denied = secured.get("/fhir/Patient")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert denied.json()["issue"][0]["code"] == "login"
        assert (
            secured.get("/fhir/Patient", headers={"Authorization": "Bearer forged"}).status_code
            == 401
        )
        assert secured.get("/fhir/metadata").status_code == 200


def test_config_masks_secrets() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://app:hunter2@db/fhir",
        orthanc_password="s3cret",  # type: ignore[arg-type]
    )
    shown = settings.masked()
    assert "hunter2" not in str(shown) and "s3cret" not in str(shown)
    assert shown["INTEROP_DATABASE_URL"] == "postgresql+psycopg://app:********@db/fhir"
    assert shown["INTEROP_ORTHANC_PASSWORD"] == "********"
