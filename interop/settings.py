"""Operator configuration: every setting is an `INTEROP_` environment variable (or `.env`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

from smart_auth.config import SELF_REGISTERED_SCOPES

SECRET_FIELDS = frozenset(
    {
        "orthanc_password",
        "orthanc_callback_token",
        "openemr_client_secret",
        "openemr_password",
    }
)


_BOOLEANS = {
    **dict.fromkeys(("true", "1", "yes", "on"), "open"),
    **dict.fromkeys(("false", "0", "no", "off"), "closed"),
}


class FileSecrets(PydanticBaseSettingsSource):
    """`INTEROP_<NAME>_FILE=/run/secrets/x` sets `<NAME>` from that file's content (its
    trailing newline dropped), as Docker and Kubernetes secrets are mounted: a password never
    has to sit in the environment. Settings whose own name ends in `_file` (they already name a
    file) are left alone; giving both `INTEROP_<NAME>` and `INTEROP_<NAME>_FILE` is an error."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        fields = self.settings_cls.model_fields
        values: dict[str, Any] = {}
        for name in fields:
            if f"{name}_file" in fields:
                continue
            variable = f"INTEROP_{name.upper()}"
            path = environ.get(f"{variable}_FILE")
            if not path:
                continue
            if variable in environ:
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            try:
                content = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{variable}_FILE: cannot read {path} ({type(exc).__name__})"
                ) from None
            value: Any = content.rstrip("\r\n")
            field = fields[name]
            if self.field_is_complex(field):  # a JSON setting (a dict, a list) from a file
                value = self.decode_complex_value(name, field, value)
            values[name] = value
        return values


class Settings(BaseSettings):
    """The names here are the operator interface (DESIGN.md, "Configuration names")."""

    model_config = SettingsConfigDict(env_prefix="INTEROP_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then `_FILE` secrets, then `.env`."""
        return (
            init_settings,
            env_settings,
            FileSecrets(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file under ./var/",
    )
    host: str = Field(default="127.0.0.1", description="HTTP listen address")
    port: int = Field(default=8080, description="HTTP listen port")
    base_url: str = Field(
        default="", description="public FHIR base; empty means http://{host}:{port}/fhir"
    )
    auth: Literal["on", "off"] = Field(default="on", description="'off' only for development")
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes")
    background: bool = Field(
        default=True,
        description="run background work (outbox consumers, jobs, deliveries, syncs, sweeps) "
        "in `interop serve`; false: a pure API replica (MLLP still listens), leaving it to "
        "the other replicas and `interop worker`",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="lease of a singleton's leader and of claimed work: a crashed process's "
        "work moves to a survivor this long after its last renewal",
    )
    log_level: str = Field(default="info", description="debug, info, warning, error")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal"
    )
    log_phi: bool = Field(default=False, description="allow patient data (bodies, queries) in logs")
    default_page_size: int = Field(default=20, ge=1, description="search _count when none is given")
    max_page_size: int = Field(default=1000, ge=1, description="largest _count honoured")
    db_pool_size: int = Field(default=10, ge=1, description="PostgreSQL connection pool size")
    db_statement_timeout_ms: int = Field(
        default=10_000, ge=0, description="longest SQL statement of a request (ms); 0: no limit"
    )
    max_body_mb: int = Field(default=16, ge=1, description="largest FHIR request body (MiB)")
    max_upload_mb: int = Field(
        default=512, ge=1, description="largest $bulk-upload body (MiB), streamed to a file"
    )
    max_json_depth: int = Field(default=64, ge=8, description="deepest nesting of a JSON body")
    validation: Literal["full", "basic"] = Field(
        default="full",
        description="full: every write is validated against FHIR R4 (structure, types, "
        "required bindings, invariants, claimed profiles); basic: only resourceType, id and the "
        "request limits (trusted bulk loads; the benchmark's baseline)",
    )
    unknown_profile: Literal["accept", "warn", "refuse"] = Field(
        default="warn",
        description="a resource claiming a profile the server does not know (meta.profile): "
        "accept, warn (accepted; $validate warns) or refuse (400)",
    )
    max_json_nodes: int = Field(
        default=250_000, ge=1000, description="most elements (values) in one JSON document"
    )
    max_array_items: int = Field(
        default=10_000, ge=100, description="most items in one JSON array of a resource"
    )
    max_patch_operations: int = Field(
        default=1000, ge=1, description="most operations in one JSON Patch"
    )
    max_search_params: int = Field(
        default=32, ge=4, description="most parameters in one search (filters and _include...)"
    )
    max_search_values: int = Field(
        default=200, ge=4, description="most values in one search, OR values counted one by one"
    )

    auth_base_url: str = Field(
        default="", description="public base of the SMART endpoints; empty: {base}/../auth"
    )
    auth_registration: Literal["open", "token", "closed"] = Field(
        default="open",
        description="RFC 7591 dynamic registration: open, token (an initial access token from "
        "auth_registration_token_file is required) or closed; true/false mean open/closed",
    )
    auth_registration_token_file: str = Field(
        default="", description="file of initial access tokens (one a line) for registration"
    )
    auth_registration_scopes: str = Field(
        default=" ".join(SELF_REGISTERED_SCOPES),
        description="the most a self-registered app may ask for (scopes, space-separated)",
    )
    auth_registration_per_address: int = Field(
        default=10, ge=1, description="registrations per client address per hour"
    )
    auth_registration_per_hour: int = Field(
        default=100, ge=1, description="registrations per hour from all addresses together"
    )
    auth_login_free_attempts: int = Field(
        default=5, ge=1, description="wrong passwords for one user name before lockouts start"
    )
    auth_login_address_free_attempts: int = Field(
        default=20, ge=1, description="wrong passwords from one address before lockouts start"
    )
    auth_login_lockout_seconds: int = Field(
        default=5, ge=1, description="first sign-in lockout; doubles with each further failure"
    )
    auth_login_max_lockout_seconds: int = Field(
        default=900, ge=1, description="longest sign-in lockout"
    )
    secret_key_file: str = Field(
        default="",
        description="file with the key that encrypts signing keys at rest (base64, 32 bytes, "
        "mode 0600); empty: ./var/secret.key, created on first start",
    )
    metrics: Literal["off", "token", "on"] = Field(
        default="token",
        description="/metrics: off, token (bearer from metrics_token_file; none set: closed) "
        "or on (anyone who can reach the port)",
    )
    metrics_token_file: str = Field(
        default="", description="file holding the bearer token /metrics requires"
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="`interop worker` serves /metrics and /healthz on this port (on "
        "INTEROP_HOST); 0: not served",
    )
    docs: Literal["off", "on"] = Field(
        default="off", description="serve /docs and /openapi.json (the HTTP API description)"
    )
    auth_access_token_seconds: int = Field(
        default=3600, ge=60, le=3600, description="lifetime of user/patient access tokens"
    )
    auth_backend_token_seconds: int = Field(
        default=300, ge=30, le=300, description="lifetime of client_credentials access tokens"
    )
    auth_refresh_token_days: int = Field(
        default=30, ge=1, description="lifetime of refresh tokens (offline_access)"
    )
    auth_online_session_hours: int = Field(
        default=12,
        ge=1,
        description="online_access: refresh tokens work this long after the user signed in",
    )
    auth_launch_seconds: int = Field(
        default=300, ge=10, le=3600, description="how long an EHR launch id stays usable"
    )
    auth_audit: bool = Field(
        default=True, description="write an AuditEvent per FHIR interaction (auth on only)"
    )
    auth_roles_file: str = Field(
        default="", description="JSON role table capping user/ scopes; empty: built-in"
    )

    mllp_host: str = Field(default="127.0.0.1", description="MLLP listen address")
    mllp_port: int = Field(default=2575, description="MLLP listen port; 0 disables the listener")
    mllp_ack_mode: str = Field(
        default="map", pattern="^(map|store)$",
        description="map: ACK after mapping; store: ACK after the inbox commit, map in background",
    )  # fmt: skip
    mllp_max_frame: int = Field(default=10 * 1024 * 1024, ge=1024, description="MLLP frame limit")
    mllp_idle_timeout: float = Field(default=300.0, gt=0, description="idle connection seconds")
    mllp_max_connections: int = Field(
        default=64, ge=1, description="open MLLP connections at once; more are closed at accept"
    )
    hl7_mapping_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="HL7 mapping threads (one patient each at a time)",
    )
    hl7_retention_days: int = Field(
        default=0, ge=0, description="delete processed HL7 messages after this many days (0: keep)"
    )
    hl7_failed_retention_days: int = Field(
        default=0, ge=0, description="delete failed HL7 messages after this many days (0: keep)"
    )
    console_session_hours: int = Field(
        default=8, ge=1, le=168, description="how long a console sign-in lasts"
    )
    mllp_tls_cert: str = Field(default="", description="PEM server certificate; enables TLS")
    mllp_tls_key: str = Field(default="", description="PEM private key for mllp_tls_cert")
    mllp_tls_ca: str = Field(default="", description="PEM CA bundle; requires client certificates")
    hl7_time_zone: str = Field(default="UTC", description="zone for v2 times without an offset")
    hl7_authorities: dict[str, str] = Field(
        default_factory=dict, description="PID-3.4 assigning authority -> identifier system (JSON)"
    )
    bulk_dir: str = Field(
        default="", description="folder for bulk export/import files; empty: ./var/bulk"
    )
    bulk_max_file_mb: int = Field(
        default=256, ge=1, description="an export NDJSON file is split at this size (MiB)"
    )
    bulk_retention_seconds: int = Field(
        default=86400, ge=0, description="finished bulk jobs and their files are kept this long"
    )
    bulk_workers: int = Field(default=2, ge=1, description="bulk jobs run at once in-process")
    bulk_import_batch: int = Field(
        default=500, ge=1, le=10000, description="resources per transaction during $import"
    )
    subscription_max_failures: int = Field(
        default=5, ge=1, description="failed deliveries in a row before a Subscription is error"
    )
    subscription_retry_seconds: float = Field(
        default=2.0, gt=0, description="first delivery retry delay; doubles per failure"
    )
    subscription_max_backoff_seconds: float = Field(
        default=300.0, gt=0, description="longest delay between delivery retries"
    )
    subscription_timeout_seconds: float = Field(
        default=10.0, gt=0, description="timeout of one rest-hook request"
    )
    redis_url: str = Field(default="", description="Celery broker; empty means in-process runner")
    dicomweb_url: str = Field(
        default="", description="DICOMweb root of the PACS; empty: imaging off"
    )
    orthanc_url: str = Field(default="", description="Orthanc REST root; enables its change feed")
    orthanc_user: str = Field(default="", description="PACS user")
    orthanc_password: SecretStr = Field(default=SecretStr(""), description="PACS password")
    orthanc_callback_token: SecretStr = Field(
        default=SecretStr(""),
        description="bearer token Orthanc's deletion Lua hook sends; empty: callback off",
    )
    dicom_issuers: dict[str, str] = Field(
        default_factory=dict, description="IssuerOfPatientID -> identifier system (JSON)"
    )
    dicom_patient_system: str = Field(
        default="urn:interop:dicom:patient-id",
        description="identifier system of a PatientID without IssuerOfPatientID",
    )
    dicom_time_zone: str = Field(default="UTC", description="zone of DICOM times with no offset")
    imaging_poll_seconds: float = Field(
        default=1.0, gt=0, description="change feed / QIDO-RS poll interval"
    )
    imaging_reconcile_seconds: float = Field(
        default=3600.0, ge=0, description="deletion reconciliation interval; 0 disables it"
    )
    openemr_url: str = Field(default="", description="OpenEMR base URL; empty: bridge off")
    openemr_site: str = Field(default="default", description="OpenEMR site")
    openemr_client_id: str = Field(default="", description="our client id in OpenEMR")
    openemr_client_secret: SecretStr = Field(default=SecretStr(""), description="its secret")
    openemr_username: str = Field(default="", description="OpenEMR service user")
    openemr_password: SecretStr = Field(default=SecretStr(""), description="its password")
    openemr_private_key: str = Field(default="", description="PEM file for private_key_jwt")
    openemr_ca_bundle: str = Field(default="", description="PEM CA bundle to verify OpenEMR's TLS")
    openemr_verify_tls: bool = Field(default=True, description="verify OpenEMR's TLS certificate")
    openemr_timeout: float = Field(default=30.0, gt=0, description="seconds per OpenEMR request")
    openemr_retries: int = Field(default=3, ge=0, description="retries on 5xx / connection errors")
    openemr_pid_system: str = Field(
        default="", description="identifier system of OpenEMR pid; empty: urn:openemr:{site}:pid"
    )
    openemr_uuid_system: str = Field(
        default="", description="identifier system of OpenEMR uuid; empty: urn:openemr:{site}:uuid"
    )
    openemr_mrn_system: str = Field(
        default="", description="identifier system of pubpid (MRN); empty: urn:openemr:{site}:mrn"
    )
    openemr_time_zone: str = Field(default="UTC", description="zone of OpenEMR's local times")
    openemr_source: Literal["api", "db"] = Field(
        default="api", description="sync from the REST API or read MariaDB directly"
    )
    openemr_db_url: str = Field(
        default="", description="read-only MariaDB URL for source db (mysql+pymysql://...)"
    )
    openemr_page_size: int = Field(default=100, ge=1, le=1000, description="patients per page")
    openemr_sync_interval: int = Field(
        default=0, ge=0, description="seconds between scheduled syncs in `serve`; 0: off"
    )
    openemr_push: bool = Field(
        default=True, description="create new canonical Patients in OpenEMR (outbox consumer)"
    )
    openemr_refresh_age: int = Field(
        default=0, ge=0, description="re-read an OpenEMR Patient older than this (s); 0: off"
    )
    openemr_launch_client: str = Field(
        default="", description="client_id of the hosted app /openemr/launch starts"
    )
    openemr_allowed_iss: list[str] = Field(
        default_factory=list, description="iss values /openemr/launch accepts (JSON); empty: ours"
    )
    openemr_frame_origins: list[str] = Field(
        default_factory=list, description="origins allowed to frame the launch pages; empty: ours"
    )
    openemr_roles: dict[str, str] = Field(
        default_factory=lambda: {"Practitioner": "physician", "Person": "nurse"},
        description="OpenEMR user type (fhirUser resource type) -> local role (JSON)",
    )

    ai_rules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON list of AI trigger rules: {model, modality, body_part, description}",
    )
    ai_onnx_models: list[dict[str, Any]] = Field(
        default_factory=list, description="JSON list of ONNX models (path, preprocessing, labels)"
    )
    ai_extra_plugins: list[str] = Field(
        default_factory=list, description="'module:callable' model providers besides entry points"
    )
    ai_worker_threads: int = Field(
        default=1, ge=0, description="in-process AI jobs at once without Redis; 0: none run"
    )
    ai_queues: str = Field(
        default="ai.decode,ai.infer,bulk,outbox",
        description="queues `interop worker` consumes (GPU hosts: ai.infer only; bulk: "
        "Bulk Data jobs; outbox: outbox consumers and subscription deliveries)",
    )
    ai_cache_dir: str = Field(
        default="", description="decoded volumes between queues; empty: ./var/ai-cache"
    )
    ai_lease_seconds: float = Field(
        default=120.0, gt=0, description="a running job's lease, renewed while it works"
    )
    ai_max_retries: int = Field(default=5, ge=0, description="retries of a transient failure")
    ai_retry_backoff: float = Field(
        default=10.0, ge=0, description="first retry delay in seconds, doubled each time"
    )
    ai_visibility_timeout: int = Field(
        default=3600, ge=1, description="seconds before Redis re-delivers an unacknowledged job"
    )

    # Outbound HTTP (outbound/): hosts each purpose may reach besides public addresses.
    # Comma-separated names, `*.suffix`, addresses or networks (CIDR); `*` allows anything.
    outbound_allow_import: str = Field(default="", description="$import source hosts allowed")
    outbound_allow_subscriptions: str = Field(
        default="", description="Subscription rest-hook endpoint hosts allowed"
    )
    outbound_allow_jwks: str = Field(default="", description="client jwks_uri hosts allowed")
    outbound_allow_openemr: str = Field(
        default="", description="OpenEMR hosts allowed besides INTEROP_OPENEMR_URL's"
    )
    outbound_allow_pacs: str = Field(
        default="", description="PACS hosts allowed besides INTEROP_DICOMWEB_URL/ORTHANC_URL's"
    )
    outbound_listed_only: bool = Field(
        default=False,
        description="contact only allow-listed hosts (public addresses need listing too)",
    )
    outbound_connect_timeout: float = Field(
        default=5.0, gt=0, description="seconds to connect to any outbound host"
    )
    outbound_import_deadline: float = Field(
        default=3600.0, gt=0, description="seconds one $import source may take in total"
    )
    outbound_import_max_mb: int = Field(
        default=1024, ge=1, description="largest $import source (MiB), cut off beyond"
    )
    outbound_jwks_deadline: float = Field(
        default=5.0, gt=0, le=60, description="seconds a client's jwks_uri may take in total"
    )

    @field_validator("auth_registration", mode="before")
    @classmethod
    def _registration_mode(cls, value: Any) -> Any:
        """Earlier versions took a boolean; true/false still mean open/closed."""
        if isinstance(value, bool):
            return "open" if value else "closed"
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path('var').resolve() / 'interop.db'}"

    @property
    def effective_ai_cache_dir(self) -> str:
        return self.ai_cache_dir or str(Path("var").resolve() / "ai-cache")

    @property
    def effective_bulk_dir(self) -> str:
        return self.bulk_dir or str(Path("var").resolve() / "bulk")

    @property
    def effective_secret_key_file(self) -> str:
        """Beside the SQLite file when the database is one, so every command on that database
        finds the key whatever directory it runs from; else ./var/secret.key."""
        if self.secret_key_file:
            return self.secret_key_file
        url = make_url(self.effective_database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return str(Path(url.database).resolve().parent / "secret.key")
        return str(Path("var").resolve() / "secret.key")

    @property
    def effective_base_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}/fhir"

    @property
    def effective_auth_base_url(self) -> str:
        if self.auth_base_url:
            return self.auth_base_url.rstrip("/")
        from smart_auth.config import AuthConfig

        return AuthConfig.derive_auth_base(self.effective_base_url)

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets and URL passwords hidden (`interop config`)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif name.endswith("_url") and isinstance(value, str):
                value = mask_url(value)
            out[f"INTEROP_{name.upper()}"] = value
        out["INTEROP_DATABASE_URL"] = mask_url(self.effective_database_url)
        out["INTEROP_BASE_URL"] = self.effective_base_url
        return out


def read_tokens(path: str, setting: str) -> tuple[str, ...]:
    """The bearer tokens in an operator's file, one a line (several allow a rotation)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{setting}: cannot read {path} ({type(exc).__name__})") from None
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens or any(len(t) < 16 for t in tokens):
        raise ValueError(f"{setting}: {path} must hold tokens of at least 16 characters")
    return tokens


def mask_url(url: str) -> str:
    """Hide the password part of a URL such as postgresql://user:secret@host/db."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":********"
    return f"{scheme}://{creds}@{host}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
