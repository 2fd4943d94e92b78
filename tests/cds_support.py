"""Support for the CDS Hooks tests (tests/cds, tests/security): a server with auth on, an EHR
that signs its calls like a CDS client, and the FHIR data the cards are computed from."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings

BASE = "http://testserver/fhir"
ROOT = "http://testserver"
EHR = "https://ehr.example.org"
LOINC = "http://loinc.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
CHEST = {"system": SNOMED, "code": "51185008", "display": "Chest"}
AI_REPORT = "urn:interop:ai:report"


def _load(name: str, relative: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


flows = sys.modules.get("smart_auth_flows") or _load("smart_auth_flows", "smart_auth/conftest.py")


@pytest.fixture(scope="session")
def cds_session_app(database_url: str):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=database_url, auth="on", base_url=BASE, outbound_allow_jwks="127.0.0.1"
    )
    app = create_app(settings)
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def cds_app(cds_session_app):  # type: ignore[no-untyped-def]
    clear_tables(cds_session_app.state.store.engine, keep={"auth_signing_keys"})
    return cds_session_app


@pytest.fixture
def http(cds_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(cds_app, base_url="http://testserver") as client:
        yield client


def iso(days_ago: float = 0) -> str:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Ehr:
    """A CDS client: registered with a key, signs a fresh JWT per call."""

    http: TestClient
    app: Any
    key: ECKey = field(
        default_factory=lambda: ECKey.generate_key("P-384", parameters={"kid": "ehr-1"})
    )
    iss: str = EHR

    def register(self, **extra: Any) -> None:
        jwks = {"keys": [self.key.as_dict(private=False)]}
        if "jwks_url" in extra:
            jwks = None  # type: ignore[assignment]
        self.app.state.cds.clients.add(self.iss, "Test EHR", jwks=jwks, **extra)

    def jwt(self, aud: str, key: ECKey | None = None, **claims: Any) -> str:
        body = {
            "iss": self.iss,
            "aud": aud,
            "exp": int(time.time()) + 120,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        signer = key or self.key
        return jwt.encode(
            {"alg": "ES384", "kid": signer.kid, "typ": "JWT"}, body, signer, ["ES384"]
        )

    def call(
        self,
        service: str,
        hook: str,
        context: dict[str, Any],
        token: str | None = None,
        **body: Any,
    ) -> Any:
        signed = token or self.jwt(f"{ROOT}/cds-services/{service}")
        payload = {
            "hook": hook,
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": BASE,
            "context": context,
            **body,
        }
        return self.http.post(
            f"/cds-services/{service}", json=payload, headers={"Authorization": f"Bearer {signed}"}
        )

    def patient_view(self, service: str, patient: str, **body: Any) -> list[dict[str, Any]]:
        response = self.call(
            service, "patient-view", {"patientId": patient, "userId": "Practitioner/p1"}, **body
        )
        assert response.status_code == 200, response.text
        return list(response.json()["cards"])

    def feedback(self, service: str, items: list[dict[str, Any]], token: str | None = None) -> Any:
        signed = token or self.jwt(f"{ROOT}/cds-services/{service}")
        return self.http.post(
            f"/cds-services/{service}/feedback",
            json={"feedback": items},
            headers={"Authorization": f"Bearer {signed}"},
        )


@pytest.fixture
def ehr(http: TestClient, cds_app: Any) -> Ehr:
    client = Ehr(http, cds_app)
    client.register()
    return client


class Data:
    """FHIR data written through the store's one write path (as a channel would)."""

    def __init__(self, app: Any) -> None:
        self.store = app.state.store

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        url = f"{resource['resourceType']}/{resource['id']}"
        self.store.apply(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": resource, "request": {"method": "PUT", "url": url}}],
            }
        )
        stored = self.store.read(resource["resourceType"], resource["id"])
        return dict(orjson.loads(stored.body))

    def patient(self, pid: str) -> str:
        self.put({"resourceType": "Patient", "id": pid, "name": [{"family": f"Fam{pid}"}]})
        return pid

    def lab(
        self,
        oid: str,
        patient: str,
        code: str,
        value: float,
        unit: str,
        flag: str | None = None,
        issued: str | None = None,
        name: str = "",
    ) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": name or code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": issued or iso(0.1),
            "issued": issued or iso(0.05),
            "valueQuantity": {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }
        if flag:
            obs["interpretation"] = [{"coding": [{"system": V3, "code": flag}]}]
        return self.put(obs)

    def ai_report(
        self,
        rid: str,
        patient: str,
        flag: str = "HH",
        conclusion: str = "Large pericardial fat volume",
    ) -> dict[str, Any]:
        self.put(
            {
                "resourceType": "Device",
                "id": f"model-{rid}",
                "deviceName": [{"name": "fat-volume", "type": "model-name"}],
                "version": [{"value": "2.1.0"}],
            }
        )
        self.put(
            {
                "resourceType": "ImagingStudy",
                "id": f"st-{rid}",
                "status": "available",
                "subject": {"reference": f"Patient/{patient}"},
                "started": iso(1),
            }
        )
        self.put(
            {
                "resourceType": "Observation",
                "id": f"obs-{rid}",
                "status": "preliminary",
                "identifier": [{"system": "urn:interop:ai:observation", "value": f"st-{rid}/x"}],
                "code": {"text": "Pericardial fat volume"},
                "subject": {"reference": f"Patient/{patient}"},
                "device": {"reference": f"Device/model-{rid}"},
                "valueQuantity": {"value": 231.5, "unit": "mL"},
                "interpretation": [{"coding": [{"system": V3, "code": flag}]}],
            }
        )
        report = {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "status": "preliminary",
            "identifier": [{"system": AI_REPORT, "value": f"st-{rid}/fat-volume"}],
            "code": {"text": "AI analysis (fat-volume)"},
            "subject": {"reference": f"Patient/{patient}"},
            "issued": iso(0.5),
            "imagingStudy": [{"reference": f"ImagingStudy/st-{rid}"}],
            "result": [{"reference": f"Observation/obs-{rid}"}],
            "conclusion": conclusion,
        }
        if not conclusion:
            del report["conclusion"]
        return self.put(report)

    def study(
        self, sid: str, patient: str, modality: str, site: dict[str, Any], days_ago: float
    ) -> dict[str, Any]:
        return self.put(
            {
                "resourceType": "ImagingStudy",
                "id": sid,
                "status": "available",
                "subject": {"reference": f"Patient/{patient}"},
                "started": iso(days_ago),
                "modality": [{"system": DCM, "code": modality}],
                "description": f"{modality} study",
                "series": [
                    {
                        "uid": f"1.2.3.{abs(hash(sid)) % 10000}",
                        "bodySite": site,
                        "modality": {"system": DCM, "code": modality},
                    }
                ],
            }
        )


@pytest.fixture
def data(cds_app: Any) -> Data:
    return Data(cds_app)


def draft_order(oid: str, patient: str, modality: str, site: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": DCM, "code": modality}], "text": f"{modality} imaging"},
        "bodySite": [{"coding": [site], "text": site.get("display", "")}],
    }


def orders_context(patient: str, *orders: dict[str, Any]) -> dict[str, Any]:
    return {
        "patientId": patient,
        "userId": "Practitioner/p1",
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": o} for o in orders],
        },
    }


def user_token(smart: Any, username: str, role: str, scope: str, patient: str | None = None) -> str:
    """An access token of a user of `role` signed in to a new public app."""
    if smart.server.registry.user(username) is None:
        smart.server.registry.add_user(username, flows.PASSWORD, role, f"Practitioner/{username}")
    client_id, _ = smart.client(scope)
    start = smart.authorize(client_id, scope)
    step = smart.login(start, username=username)
    if step.headers["location"].startswith("pick"):
        step = smart.pick(step, patient)
    done = smart.consent(step)
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    response = smart.http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flows.REDIRECT,
            "code_verifier": start.verifier,
            "client_id": client_id,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def smart(http: TestClient, cds_app: Any) -> Any:
    return flows.Smart(http, cds_app)


class JwksHandler(BaseHTTPRequestHandler):
    jwks: dict[str, Any] = {}
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = orjson.dumps(self.jwks)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[JwksHandler]]]:
    handler = type("Handler", (JwksHandler,), {"jwks": {}, "hits": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json", handler
    server.shutdown()
    server.server_close()
