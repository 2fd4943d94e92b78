"""Discovery: what a SMART client reads before it does anything else."""

from __future__ import annotations

from starlette.testclient import TestClient

from smart_auth.discovery import CAPABILITIES


def test_smart_configuration_lists_endpoints_and_capabilities(http: TestClient) -> None:
    response = http.get(
        "/fhir/.well-known/smart-configuration", headers={"Origin": "https://app.example"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    doc = response.json()
    assert doc["token_endpoint"] == "http://testserver/auth/token"
    assert doc["authorization_endpoint"] == "http://testserver/auth/authorize"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    for field in (
        "issuer",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
        "management_endpoint",
        "scopes_supported",
        "response_types_supported",
    ):
        assert doc[field], field
        if field.endswith(("endpoint", "uri")):
            assert doc[field].startswith("http://testserver/")
    assert set(CAPABILITIES) <= set(doc["capabilities"])


def test_openid_configuration_and_jwks(http: TestClient) -> None:
    openid = http.get("/fhir/.well-known/openid-configuration").json()
    assert openid["issuer"] == "http://testserver/fhir"
    assert openid["id_token_signing_alg_values_supported"] == ["RS256"]
    assert openid["subject_types_supported"] == ["public"]
    keys = http.get("/auth/jwks").json()["keys"]
    assert keys and all(k["kid"] and k["kty"] == "RSA" and "d" not in k for k in keys)


def test_rotation_keeps_old_keys_for_verification(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    token = smart.backend_token("system/*.rs")
    before = {k["kid"] for k in http.get("/auth/jwks").json()["keys"]}
    new_kid = smart.server.keys.rotate()
    after = {k["kid"] for k in http.get("/auth/jwks").json()["keys"]}
    assert before < after and new_kid in after
    assert (
        http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    fresh = smart.backend_token("system/*.rs")
    import base64
    import json

    header = json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))
    assert header["kid"] == new_kid


def test_capability_statement_carries_smart_security(http: TestClient) -> None:
    response = http.get("/fhir/metadata", headers={"Origin": "https://app.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    security = response.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["authorize"] == "http://testserver/auth/authorize"
    assert uris["token"] == "http://testserver/auth/token"
    assert uris["register"] == "http://testserver/auth/register"


def test_fhir_without_token_is_401_with_challenge(http: TestClient) -> None:
    response = http.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    bad = http.get("/fhir/Patient", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json()["resourceType"] == "OperationOutcome"
