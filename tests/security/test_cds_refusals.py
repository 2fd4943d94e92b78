"""CDS Hooks surface (/cds-services): a call is accepted only with a JWT signed by a registered
CDS client's key, for this service's URL, unexpired and never seen before; what it reads is
bounded by the client's registered scope or the access token it hands over; feedback only
touches cards issued to the same client."""

# ruff: noqa: F811 - the fixtures imported from cds_support are parameters by name

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from cds_support import (  # noqa: F401 - fixtures are used by name
    BASE,
    ROOT,
    Data,
    Ehr,
    cds_app,
    cds_session_app,
    data,
    ehr,
    http,
    jwks_server,
    smart,
    user_token,
)
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from starlette.testclient import TestClient

SERVICE = "critical-labs"
URL = f"{ROOT}/cds-services/{SERVICE}"


def refused(response: Any, status: int = 401, text: str = "") -> bool:
    body = response.json()
    ok = response.status_code == status and body.get("resourceType") == "OperationOutcome"
    if status == 401:
        ok = ok and "invalid_token" in response.headers.get("www-authenticate", "")
    return ok and text in body["issue"][0]["diagnostics"]


def view(ehr: Ehr, token: str | None, patient: str = "p1", **body: Any) -> Any:
    return ehr.call(SERVICE, "patient-view", {"patientId": patient}, token=token, **body)


def test_a_call_without_a_jwt_is_refused(ehr: Ehr, http: TestClient, data: Data) -> None:
    data.patient("p1")
    payload = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"}}
    assert refused(http.post(f"/cds-services/{SERVICE}", json=payload), text="Bearer <JWT>")
    assert refused(http.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": []}))


def test_wrong_key_unknown_kid_and_unregistered_issuer_are_refused(ehr: Ehr, data: Data) -> None:
    data.patient("p1")
    assert view(ehr, None).status_code == 200
    impostor = ECKey.generate_key("P-384", parameters={"kid": ehr.key.kid})
    assert refused(view(ehr, ehr.jwt(URL, key=impostor)), text="signature does not verify")
    stranger = ECKey.generate_key("P-384", parameters={"kid": "other"})
    assert refused(view(ehr, ehr.jwt(URL, key=stranger)), text="No key with kid")
    assert refused(view(ehr, ehr.jwt(URL, iss="https://evil.example")), text="not a registered")


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"aud": f"{ROOT}/cds-services/ai-findings-review"}, "aud must be this service's URL"),
        ({"aud": BASE}, "aud must be"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": int(time.time()) + 7200}, "lives too long"),
        ({"jti": ""}, "needs a jti"),
    ],
)
def test_bad_claims_are_refused(ehr: Ehr, data: Data, claims: dict[str, Any], why: str) -> None:
    data.patient("p1")
    assert refused(view(ehr, ehr.jwt(**({"aud": URL} | claims))), text=why)


def test_a_replayed_jwt_is_refused(ehr: Ehr, data: Data) -> None:
    data.patient("p1")
    token = ehr.jwt(URL)
    assert view(ehr, token).status_code == 200
    assert refused(view(ehr, token), text="already used")


def test_symmetric_or_unsigned_jwts_are_refused(ehr: Ehr, data: Data) -> None:
    data.patient("p1")
    claims = {"iss": ehr.iss, "aud": URL, "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    secret = OctKey.import_key("a-shared-secret-of-enough-length-1234567890")
    hs = jwt.encode({"alg": "HS256", "kid": ehr.key.kid}, claims, secret, ["HS256"])
    assert refused(view(ehr, hs), text="ES384 or RS384")
    head, body, _ = ehr.jwt(URL).split(".")
    assert refused(view(ehr, f"{head}.{body}."), text="signature")


def test_jku_must_be_the_registered_jwks_url(ehr: Ehr, data: Data) -> None:
    data.patient("p1")
    claims = {"iss": ehr.iss, "aud": URL, "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    header = {"alg": "ES384", "kid": ehr.key.kid, "jku": "https://evil.example/jwks.json"}
    signed = jwt.encode(header, claims, ehr.key, ["ES384"])
    assert refused(view(ehr, signed), text="jku")


def test_keys_from_a_registered_jwks_url(
    http: TestClient, cds_app: Any, data: Data, jwks_server: Any
) -> None:
    url, handler = jwks_server
    client = Ehr(http, cds_app, iss="https://url-ehr.example")
    handler.jwks = {"keys": [client.key.as_dict(private=False)]}
    client.register(jwks_url=url)
    data.patient("p1")
    assert view(client, None).status_code == 200
    assert handler.hits == 1
    other = ECKey.generate_key("P-384", parameters={"kid": "ehr-1"})
    assert refused(view(client, client.jwt(URL, key=other)))


def test_feedback_only_on_cards_issued_to_the_same_client(
    ehr: Ehr, data: Data, http: TestClient, cds_app: Any
) -> None:
    p = data.patient("p1")
    data.lab("k", p, "2823-3", 7.0, "mmol/L", flag="HH")
    [card] = ehr.patient_view(SERVICE, p)
    rival = Ehr(http, cds_app, iss="https://rival.example")
    rival.register()
    item = {"card": card["uuid"], "outcome": "accepted"}
    assert refused(rival.feedback(SERVICE, [item]), 404, "was not issued")
    assert refused(ehr.feedback("ai-findings-review", [item]), 404)  # another service's
    assert refused(ehr.feedback(SERVICE, [item], token=ehr.jwt(f"{ROOT}/cds-services/x")))
    assert len(ehr.patient_view(SERVICE, p)) == 1  # nothing was acknowledged
    assert ehr.feedback(SERVICE, [item]).status_code == 200
    assert ehr.patient_view(SERVICE, p) == []


def test_fhir_authorization_bounds_what_a_call_reads(ehr: Ehr, data: Data, smart: Any) -> None:
    a, b = data.patient("pa"), data.patient("pb")
    data.lab("ka", a, "2823-3", 7.0, "mmol/L", flag="HH")
    data.lab("kb", b, "2823-3", 7.0, "mmol/L", flag="HH")
    confined = user_token(smart, "clara", "physician", "launch/patient patient/*.rs", a)

    def auth(token: str) -> dict[str, Any]:
        return {
            "fhirAuthorization": {
                "access_token": token,
                "token_type": "Bearer",
                "scope": "patient/*.rs",
                "subject": "clara",
            }
        }

    assert len(view(ehr, None, a, **auth(confined)).json()["cards"]) == 1
    assert refused(view(ehr, None, b, **auth(confined)), 403, "another patient")
    assert refused(view(ehr, None, a, **auth("not-a-token")), text="fhirAuthorization")
    no_labs = user_token(smart, "dora", "physician", "user/Patient.rs")
    assert refused(view(ehr, None, a, **auth(no_labs)), 403, "Observation")


def test_registered_scope_bounds_a_call_without_a_token(
    http: TestClient, cds_app: Any, data: Data
) -> None:
    narrow = Ehr(http, cds_app, iss="https://narrow.example")
    narrow.register(scope="patient/Observation.rs")
    data.patient("p1")
    assert view(narrow, None).status_code == 200
    response = narrow.call("ai-findings-review", "patient-view", {"patientId": "p1"})
    assert refused(response, 403, "DiagnosticReport")


def test_discovery_is_public_and_reveals_no_patient_data(http: TestClient, data: Data) -> None:
    data.patient("p1")
    body = http.get("/cds-services").text
    assert "p1" not in body and "Fam" not in body


def test_imaging_app_pages_refuse_foreign_framing_and_stray_paths(http: TestClient) -> None:
    """The hosted app's pages carry no data (the app reads with its own token); they may be
    framed only by this server and OpenEMR's origins, and serve only their own files."""
    page = http.get("/apps/imaging/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self';" in policy  # no OpenEMR configured: only this server
    assert "connect-src 'self'" in policy
    for path in ("/apps/imaging/..%2f..%2fpyproject.toml", "/apps/imaging/routes.py",
                 "/apps/imaging/static", "/apps/imaging/web/package.json"):  # fmt: skip
        assert http.get(path).status_code == 404, path
    assert http.post("/apps/imaging/config.json").status_code == 405
