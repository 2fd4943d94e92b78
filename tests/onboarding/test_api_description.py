"""`/`, `/openapi.json` and `/docs`: the API description is generated from the
CapabilityStatement (so it lists what `/fhir/metadata` lists), and the docs load no CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from interop.app import create_app
from interop.settings import Settings, env_example

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docs_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 'interop.db'}"
    app = create_app(Settings(database_url=url, docs="on", base_url="http://testserver/fhir"))
    with TestClient(app) as client:
        yield client


def test_openapi_has_a_path_per_interaction_of_the_capability(docs_on: TestClient) -> None:
    capability = docs_on.get("/fhir/metadata").json()
    doc = docs_on.get("/openapi.json").json()
    # a valid OpenAPI 3.1 document (what Swagger UI and client generators need); every type's
    # paths come from the same code, so the system paths and two types stand for all (quicker)
    kept = ("/fhir/metadata", "/fhir/_history", "/fhir/$", "/fhir/Patient", "/fhir/Observation")
    validate(doc | {"paths": {k: v for k, v in doc["paths"].items() if k.startswith(kept)}})
    validate(doc | {"paths": {"/fhir": doc["paths"]["/fhir"]}})
    paths = doc["paths"]
    resources = capability["rest"][0]["resource"]
    for resource in resources:
        rtype = resource["type"]
        codes = {i["code"] for i in resource["interaction"]}
        if "read" in codes:
            assert "get" in paths[f"/fhir/{rtype}/{{id}}"], rtype
        if "search-type" in codes:
            query = {p.get("name") for p in paths[f"/fhir/{rtype}"]["get"]["parameters"]}
            assert {sp["name"] for sp in resource.get("searchParam", [])} <= query, rtype
            assert "_count" not in query  # shared parameters are references
        if "create" in codes:
            assert "post" in paths[f"/fhir/{rtype}"]
        for op in resource.get("operation", []):
            assert f"/fhir/{rtype}/{{id}}/${op['name']}" in paths
    assert "post" in paths["/fhir"]  # batch / transaction
    patient_search = paths["/fhir/Patient"]["get"]["parameters"]
    birthdate = next(p for p in patient_search if p.get("name") == "birthdate")
    assert birthdate["in"] == "query" and "date" in birthdate["description"]
    flows = doc["components"]["securitySchemes"]["smart"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "http://testserver/auth/token"
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_docs_load_only_local_assets(docs_on: TestClient) -> None:
    page = docs_on.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    assert "cdn" not in page.text.lower()
    for asset in assets:
        assert docs_on.get(asset).status_code == 200, asset


def test_root_page_leads_somewhere(docs_on: TestClient) -> None:
    page = docs_on.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = set(re.findall(r'href="([^"]+)"', page.text))
    assert {"/console", "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/docs"} <= links
    for link in links - {"/console"}:  # the console is another page's
        assert docs_on.get(link).status_code == 200, link


def test_env_example_lists_every_setting() -> None:
    listed = (ROOT / ".env.example").read_text()
    missing = [
        f"INTEROP_{name.upper()}"
        for name in Settings.model_fields
        if f"# INTEROP_{name.upper()}=" not in listed
    ]
    assert not missing, f"run `interop config --example > .env.example`; missing: {missing}"
    assert listed == env_example(), "run `interop config --example > .env.example`"
