"""Discovery documents: SMART configuration, OpenID configuration, CapabilityStatement security."""

from __future__ import annotations

from typing import Any

from smart_auth.assertion import ALGORITHMS
from smart_auth.config import AuthConfig

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-standalone-encounter",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]
SCOPES = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.rs",
    "user/*.cruds",
    "user/*.read",
    "user/*.write",
    "system/*.rs",
    "system/*.cruds",
    "system/*.read",
]


def smart_configuration(config: AuthConfig) -> dict[str, Any]:
    auth = config.auth_base
    doc: dict[str, Any] = {
        "issuer": config.issuer,
        "jwks_uri": f"{auth}/jwks",
        "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": config.token_url,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "introspection_endpoint": f"{auth}/introspect",
        "revocation_endpoint": f"{auth}/revoke",
        "management_endpoint": f"{auth}/manage",
        "capabilities": CAPABILITIES,
    }
    if config.registration != "closed":
        doc["registration_endpoint"] = f"{auth}/register"
    return doc


def openid_configuration(config: AuthConfig) -> dict[str, Any]:
    smart = smart_configuration(config)
    return {
        "issuer": config.issuer,
        "authorization_endpoint": smart["authorization_endpoint"],
        "token_endpoint": smart["token_endpoint"],
        "jwks_uri": smart["jwks_uri"],
        "registration_endpoint": smart.get("registration_endpoint"),
        "scopes_supported": smart["scopes_supported"],
        "response_types_supported": ["code"],
        "grant_types_supported": smart["grant_types_supported"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": smart["token_endpoint_auth_methods_supported"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
    }


def security_extension(config: AuthConfig) -> dict[str, Any]:
    """The `oauth-uris` extension older clients still read from the CapabilityStatement."""
    auth = config.auth_base
    return {
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            {"url": "authorize", "valueUri": f"{auth}/authorize"},
            {"url": "token", "valueUri": config.token_url},
            {"url": "register", "valueUri": f"{auth}/register"},
            {"url": "manage", "valueUri": f"{auth}/manage"},
            {"url": "introspect", "valueUri": f"{auth}/introspect"},
            {"url": "revoke", "valueUri": f"{auth}/revoke"},
        ],
    }
