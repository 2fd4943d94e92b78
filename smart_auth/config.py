"""What the authorization server needs to know, taken from the operator's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from outbound import MB, Policy

# what an app registering itself (RFC 7591) may ask for unless the operator says otherwise
SELF_REGISTERED_SCOPES = (
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "patient/*.rs",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuthConfig:
    fhir_base: str  # the `aud` every token is for, and the issuer
    auth_base: str  # where /auth lives, e.g. https://host/auth
    access_token_seconds: int = 3600
    backend_token_seconds: int = 300
    refresh_token_seconds: int = 30 * 86400  # offline_access
    online_session_seconds: int = 12 * 3600  # online_access: from sign-in, not renewed
    code_seconds: int = 60
    launch_seconds: int = 300
    registration: str = "open"  # open, token (RFC 7591 initial access token) or closed
    registration_tokens: tuple[str, ...] = field(default=(), repr=False)
    registration_scopes: tuple[str, ...] = SELF_REGISTERED_SCOPES
    registration_per_address: int = 10  # per hour
    registration_per_hour: int = 100  # from all addresses together
    login_free_attempts: int = 5  # wrong passwords per user name before lockouts start
    login_address_free_attempts: int = 20  # the same per client address
    login_lockout_seconds: int = 5  # first lockout; doubles with each further failure
    login_max_lockout_seconds: int = 900
    secret_key_file: str = ""  # the key that seals the signing keys (smart_auth/sealing.py)
    frame_origins: tuple[str, ...] = ()  # may frame the pages of an EHR launch (OpenEMR)
    roles_file: str = ""
    # where client jwks_uri documents may be fetched from (INTEROP_OUTBOUND_ALLOW_JWKS)
    jwks_fetch: Policy = field(
        default_factory=lambda: Policy(
            "client JWKS", read_timeout=5.0, deadline=5.0, max_bytes=MB, max_redirects=2
        )  # fmt: skip
    )

    @property
    def issuer(self) -> str:
        return self.fhir_base

    @property
    def token_url(self) -> str:
        return f"{self.auth_base}/token"

    @property
    def secure_cookies(self) -> bool:
        return self.auth_base.startswith("https://")

    @staticmethod
    def derive_auth_base(fhir_base: str) -> str:
        """`https://h/fhir` -> `https://h/auth` (the project convention)."""
        root = fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base
        return f"{root}/auth"
