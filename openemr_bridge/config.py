"""The bridge's view of the operator's settings (interop/settings.py holds the names)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from pydantic import SecretStr

from mappers.openemr import Systems
from outbound import MB, Policy

API_SCOPE = (
    "openid offline_access api:oemr user/patient.crus user/encounter.rs user/vital.rs "
    "user/medical_problem.rs user/allergy.rs user/medication.rs user/prescription.rs"
)
SYSTEM_SCOPE = "system/Patient.rs system/Encounter.rs system/Observation.rs"
LAUNCH_SCOPE = "openid fhirUser launch api:fhir user/Patient.rs user/Practitioner.rs"


@dataclass
class OpenEmrConfig:
    base_url: str
    site: str = "default"
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    private_key: str = ""  # PEM file for private_key_jwt
    api_scope: str = API_SCOPE
    system_scope: str = SYSTEM_SCOPE
    ca_bundle: str = ""
    verify_tls: bool = True
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    systems: Systems = field(default_factory=Systems.for_site)
    outbound: Policy | None = None  # INTEROP_OUTBOUND_*; None: defaults from `timeout`

    def policy(self) -> Policy:
        """The outbound rules for OpenEMR: its configured host is always allowed."""
        policy = self.outbound or Policy(
            "OpenEMR", read_timeout=self.timeout, deadline=self.timeout * 4, max_bytes=256 * MB
        )
        return policy.allowing(self.base_url)

    def tls_verify(self) -> ssl.SSLContext | bool:
        """On by default; a configured CA bundle (a private CA) keeps it on, against that CA."""
        if self.ca_bundle:
            return ssl.create_default_context(cafile=self.ca_bundle)
        return self.verify_tls

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def token_url(self) -> str:
        return f"{self.root}/oauth2/{self.site}/token"

    @property
    def api_base(self) -> str:
        return f"{self.root}/apis/{self.site}/api"

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/apis/{self.site}/fhir"


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge reads from the operator's settings (INTEROP_OPENEMR_*), built by
    `interop.runtime`; `setup` turns it into clients, sources and the launch bridge."""

    openemr_url: str = ""  # empty: the bridge is off
    openemr_site: str = "default"
    openemr_client_id: str = ""
    openemr_client_secret: SecretStr = SecretStr("")
    openemr_username: str = ""
    openemr_password: SecretStr = SecretStr("")
    openemr_private_key: str = ""
    openemr_ca_bundle: str = ""
    openemr_verify_tls: bool = True
    openemr_timeout: float = 30.0
    openemr_retries: int = 3
    openemr_pid_system: str = ""
    openemr_uuid_system: str = ""
    openemr_mrn_system: str = ""
    openemr_time_zone: str = "UTC"
    openemr_source: str = "api"
    openemr_db_url: str = ""
    openemr_page_size: int = 100
    openemr_sync_interval: int = 0
    openemr_push: bool = True
    openemr_refresh_age: int = 0
    openemr_launch_client: str = ""
    openemr_allowed_iss: list[str] = field(default_factory=list)
    openemr_frame_origins: list[str] = field(default_factory=list)
    openemr_roles: dict[str, str] = field(
        default_factory=lambda: {"Practitioner": "physician", "Person": "nurse"}
    )
    effective_base_url: str = ""  # this server's FHIR base (the launch callback lives beside it)
    auth_launch_seconds: int = 300
    outbound: Policy | None = None  # INTEROP_OUTBOUND_* for OpenEMR
