"""The composition root: one `Runtime` builds the engine, store, channels and background
services from the operator's `Settings`; `create_app`, `interop serve`, `interop worker`
and every CLI command start from it, and nothing below `interop` reads the settings.

Each channel gets a small config object of its own (`Hl7Config`, `ImagingConfig`,
`BridgeSettings`, `AiConfig`, `BulkConfig`, `SubscriptionConfig`, `AuthConfig`), built here.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from ai_worker.config import AiConfig
from cds_hooks.config import CdsConfig, parse_ranges, public_root
from dicomweb_bridge.config import ImagingConfig
from dicomweb_bridge.pacs import PacsConfig
from dicomweb_bridge.service import Bridge, proxy_root
from fhir_server import limits, terminology, validation
from fhir_server.api.context import Context
from fhir_server.bulk.config import BulkConfig
from fhir_server.store.audit import audited
from fhir_server.store.db import create_db_engine, schema_revisions, upgrade
from fhir_server.store.repository import Store
from fhir_server.store.work import Leases
from fhir_server.subscriptions.service import SubscriptionConfig
from fhir_server.terminology import V2Vocabulary
from hl7_listener.config import Hl7Config
from hl7_listener.inbox import Inbox
from hl7_listener.processor import Processor
from interop.outbound_policies import OutboundPolicies
from interop.services import Loop, Managed, Services, Singleton
from interop.settings import Settings, get_settings, read_tokens
from openemr_bridge.config import BridgeSettings
from openemr_bridge.setup import frame_origins
from smart_auth.config import AuthConfig
from smart_auth.server import AuthServer

log = logging.getLogger("interop")
C = TypeVar("C")


def config_for(cls: type[C], settings: Settings, **extra: Any) -> C:
    """A channel's config dataclass, each field read from the setting of the same name."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in extra]  # type: ignore[arg-type]
    return cls(**{n: getattr(settings, n) for n in names}, **extra)


class ChannelConfigs:
    """Each channel's config object, built from the settings (no database needed)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.base_url = self.settings.effective_base_url

    @cached_property
    def outbound(self) -> OutboundPolicies:
        return OutboundPolicies.from_settings(self.settings)

    def hl7_config(self) -> Hl7Config:
        return config_for(Hl7Config, self.settings)

    def imaging_config(self) -> ImagingConfig | None:
        """None when imaging is off (neither INTEROP_DICOMWEB_URL nor INTEROP_ORTHANC_URL)."""
        s = self.settings
        orthanc = s.orthanc_url.rstrip("/")
        dicomweb = s.dicomweb_url.rstrip("/") or (f"{orthanc}/dicom-web" if orthanc else "")
        if not dicomweb:
            return None
        pacs = PacsConfig(
            dicomweb,
            orthanc,
            s.orthanc_user,
            s.orthanc_password.get_secret_value(),
            outbound=self.outbound.pacs,
        )
        return config_for(ImagingConfig, s, pacs=pacs, proxy_root=proxy_root(self.base_url))

    def openemr_settings(self) -> BridgeSettings:
        return config_for(BridgeSettings, self.settings, outbound=self.outbound.openemr)

    def ai_config(self) -> AiConfig:
        """The AI worker's config; its PACS is the imaging channel's (Orthanc's DICOMweb root
        when only INTEROP_ORTHANC_URL is set)."""
        imaging = self.imaging_config()
        dicomweb = imaging.pacs.dicomweb_url if imaging is not None else ""
        return config_for(AiConfig, self.settings, dicomweb_url=dicomweb)

    def auth_config(self) -> AuthConfig:
        return auth_config(self.settings)

    def bulk_config(self) -> BulkConfig:
        return bulk_config(self.settings)

    def subscription_config(self) -> SubscriptionConfig:
        return subscription_config(self.settings)

    def cds_config(self) -> CdsConfig:
        s = self.settings
        return CdsConfig(
            public_root=public_root(self.base_url),
            fhir_base=self.base_url,
            auth_enabled=s.auth_enabled,
            lab_days=s.cds_lab_days,
            imaging_window_days=s.cds_imaging_window_days,
            jwt_max_seconds=s.cds_jwt_max_seconds,
            critical_ranges=parse_ranges(s.cds_critical_ranges),
            jwks_fetch=self.outbound.jwks,
        )


class Runtime(ChannelConfigs):
    """One process's engine, store and services. `pool_size` defaults to INTEROP_DB_POOL_SIZE
    (the API); command-line tools use a small pool."""

    def __init__(
        self, settings: Settings | None = None, migrate: bool = True, pool_size: int | None = None
    ) -> None:
        super().__init__(settings)
        settings = self.settings
        validation.configure(settings.validation, settings.unknown_profile)
        self.engine = create_db_engine(
            settings.effective_database_url,
            pool_size or settings.db_pool_size,
            settings.db_statement_timeout_ms,
        )
        if migrate:
            upgrade(self.engine)
        # every change the store commits, from any channel, gets its AuditEvent
        self.store = audited(
            Store(self.engine, self.base_url), settings.auth_enabled and settings.auth_audit
        )
        self.ctx = Context(
            self.store, self.base_url, settings.default_page_size, settings.max_page_size
        )
        # stored CodeSystems, ValueSets and ConceptMaps count; a committed change to one
        # empties the caches (other processes notice through a stamp query)
        self.terminology = terminology.configure(self.engine)
        # required bindings to value sets the generated tables lack (stored ones, v2 tables)
        validation.valuesets.set_membership(terminology.contains)
        self.store.change_listeners.append(self.terminology.invalidate)
        self.services = Services()

    def close(self) -> None:
        self.services.stop()
        self.engine.dispose()

    # --- channels -----------------------------------------------------------------------

    def auth_server(self) -> AuthServer:
        return AuthServer(self.engine, self.auth_config())

    def hl7_processor(self, ack_mode: str | None = None) -> Processor:
        """The HL7 v2 processor; `ack_mode` "map" for HTTP (the caller waits for the mapping)."""
        c = self.hl7_config()
        return Processor(
            Inbox(self.engine, 4 * c.lease_seconds), self.store, ack_mode or c.mllp_ack_mode,
            c.hl7_authorities, c.hl7_time_zone, c.hl7_mapping_workers,
            V2Vocabulary(self.terminology),
        )  # fmt: skip

    def imaging_bridge(self) -> Bridge | None:
        config = self.imaging_config()
        return None if config is None else Bridge.build(config, self.ctx)

    @cached_property
    def leases(self) -> Leases:
        """This process as a holder of named leases (the singletons' leader election)."""
        return Leases(self.engine)

    def add_channel_services(self, mllp: bool = True, background: bool = True) -> None:
        """The channels that run once per server, not per API worker: the MLLP listener,
        the imaging sync and the scheduled OpenEMR sync (each only when configured). The
        syncs are singletons: they run on one process of the deployment (the holder of their
        lease) and move to another when it dies; `background=False` leaves them out."""
        from dicomweb_bridge.runner import ImagingSync
        from hl7_listener.runner import ListenerThread
        from openemr_bridge.runner import scheduled_sync

        s = self.settings
        lease = s.lease_seconds
        if mllp and s.mllp_port != 0:
            listener = ListenerThread(self.hl7_config(), self.hl7_processor())

            def listen() -> None:
                if listener.start() is None:
                    raise OSError(f"the MLLP listener could not listen on port {s.mllp_port}")

            self.services.add(
                Managed("mllp", listen, listener.stop, listener.health, required=True)
            )
        if not background:
            return
        if s.hl7_retention_days or s.hl7_failed_retention_days:
            from hl7_listener.retention import prune

            retention = Loop(
                "hl7-retention",
                lambda: prune(self.engine, s.hl7_retention_days, s.hl7_failed_retention_days),
                3600.0,
                max_backoff=3600.0,
            )
            self.services.add(Singleton(retention, self.leases, lease))
        bridge = self.imaging_bridge()
        if bridge is not None:
            sync = ImagingSync(bridge)
            interval = bridge.config.imaging_poll_seconds
            follow = Loop("imaging-sync", sync.step, interval, on_stop=bridge.close)
            self.services.add(Singleton(follow, self.leases, lease))
        bridge_settings = self.openemr_settings()
        if s.openemr_url and s.openemr_sync_interval > 0:
            schedule = Loop(
                "openemr-sync",
                lambda: scheduled_sync(bridge_settings, self.ctx),
                s.openemr_sync_interval,
                max_backoff=max(60.0, s.openemr_sync_interval),
            )
            self.services.add(Singleton(schedule, self.leases, lease))


class SchemaBehind(RuntimeError):
    """The database is older than this code and the command may not migrate it."""


def open_runtime(settings: Settings, write: bool, pool_size: int = 2) -> Runtime:
    """A command's runtime. Only `serve` and `interop db upgrade` migrate a database that
    has a schema; a command that writes may create the schema of a never-migrated one (it
    can be the first run); a read-only command on an old schema refuses (`SchemaBehind`)."""
    runtime = Runtime(settings, migrate=False, pool_size=pool_size)
    try:
        current, newest = schema_revisions(runtime.engine)
        if current == newest:
            return runtime
        if write and not current:
            upgrade(runtime.engine)
            return runtime
        where = ", ".join(sorted(current)) or "empty (never migrated)"
        raise SchemaBehind(
            f"the database schema is {where}; this version needs {', '.join(sorted(newest))}: "
            "run `interop db upgrade` (or start the server) first"
        )
    except BaseException:
        runtime.close()
        raise


def subscription_config(settings: Settings) -> SubscriptionConfig:
    return SubscriptionConfig(
        max_failures=settings.subscription_max_failures,
        retry_seconds=settings.subscription_retry_seconds,
        max_backoff_seconds=settings.subscription_max_backoff_seconds,
        timeout_seconds=settings.subscription_timeout_seconds,
        endpoints=OutboundPolicies.from_settings(settings).subscriptions,
    )


def bulk_config(settings: Settings) -> BulkConfig:
    """The bulk jobs' view of the operator's settings."""
    return BulkConfig(
        directory=Path(settings.effective_bulk_dir),
        max_file_bytes=settings.bulk_max_file_mb * 1024 * 1024,
        retention_seconds=settings.bulk_retention_seconds,
        workers=settings.bulk_workers,
        import_batch=settings.bulk_import_batch,
        sources=OutboundPolicies.from_settings(settings).import_,
    )


def auth_config(settings: Settings) -> AuthConfig:
    """The authorization server's view of the operator's settings."""
    return AuthConfig(
        fhir_base=settings.effective_base_url,
        auth_base=settings.effective_auth_base_url,
        access_token_seconds=settings.auth_access_token_seconds,
        backend_token_seconds=settings.auth_backend_token_seconds,
        refresh_token_seconds=settings.auth_refresh_token_days * 86400,
        online_session_seconds=settings.auth_online_session_hours * 3600,
        launch_seconds=settings.auth_launch_seconds,
        registration=settings.auth_registration,
        registration_tokens=registration_tokens(settings),
        registration_scopes=tuple(settings.auth_registration_scopes.split()),
        registration_per_address=settings.auth_registration_per_address,
        registration_per_hour=settings.auth_registration_per_hour,
        login_free_attempts=settings.auth_login_free_attempts,
        login_address_free_attempts=settings.auth_login_address_free_attempts,
        login_lockout_seconds=settings.auth_login_lockout_seconds,
        login_max_lockout_seconds=settings.auth_login_max_lockout_seconds,
        secret_key_file=settings.effective_secret_key_file,
        frame_origins=tuple(frame_origins(config_for(BridgeSettings, settings, outbound=None))),
        roles_file=settings.auth_roles_file,
        jwks_fetch=OutboundPolicies.from_settings(settings).jwks,
    )


def registration_tokens(settings: Settings) -> tuple[str, ...]:
    """RFC 7591 initial access tokens; INTEROP_AUTH_REGISTRATION=token needs the file."""
    if settings.auth_registration != "token":
        return ()
    if not settings.auth_registration_token_file:
        raise ValueError(
            "INTEROP_AUTH_REGISTRATION=token needs INTEROP_AUTH_REGISTRATION_TOKEN_FILE"
        )
    path = settings.auth_registration_token_file
    return read_tokens(path, "INTEROP_AUTH_REGISTRATION_TOKEN_FILE")


def request_limits(settings: Settings) -> limits.Limits:
    """The request limits named by the operator's settings (fhir_server.limits)."""
    mib = 1024 * 1024
    return limits.Limits(
        max_body_bytes=settings.max_body_mb * mib,
        max_upload_bytes=settings.max_upload_mb * mib,
        max_json_depth=settings.max_json_depth,
        max_json_nodes=settings.max_json_nodes,
        max_array_items=settings.max_array_items,
        max_patch_operations=settings.max_patch_operations,
        max_search_params=settings.max_search_params,
        max_search_values=settings.max_search_values,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
