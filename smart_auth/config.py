"""What the authorization server needs to know, taken from the operator's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from outbound import MB, Policy


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
    registration: bool = True
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
