"""Builds the bridge's parts from the operator's settings (one place, shared by CLI and app)."""

from __future__ import annotations

from urllib.parse import urlsplit

from mappers.openemr import Systems
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.config import BridgeSettings, OpenEmrConfig
from openemr_bridge.source import ApiSource, Source


class NotConfigured(RuntimeError):
    """The bridge is off (INTEROP_OPENEMR_URL unset) or a needed setting is missing."""


def systems(settings: BridgeSettings) -> Systems:
    return Systems.for_site(
        settings.openemr_site,
        pid=settings.openemr_pid_system,
        uuid=settings.openemr_uuid_system,
        mrn=settings.openemr_mrn_system,
        zone=settings.openemr_time_zone,
    )


def config(settings: BridgeSettings) -> OpenEmrConfig:
    if not settings.openemr_url:
        raise NotConfigured("the OpenEMR bridge is off: set INTEROP_OPENEMR_URL")
    return OpenEmrConfig(
        base_url=settings.openemr_url,
        site=settings.openemr_site,
        client_id=settings.openemr_client_id,
        client_secret=settings.openemr_client_secret.get_secret_value(),
        username=settings.openemr_username,
        password=settings.openemr_password.get_secret_value(),
        private_key=settings.openemr_private_key,
        ca_bundle=settings.openemr_ca_bundle,
        verify_tls=settings.openemr_verify_tls,
        timeout=settings.openemr_timeout,
        retries=settings.openemr_retries,
        systems=systems(settings),
        outbound=settings.outbound,
    )


def client(settings: BridgeSettings) -> OpenEmrClient:
    return OpenEmrClient(config(settings))


def source(settings: BridgeSettings, api: OpenEmrClient | None = None) -> Source:
    if settings.openemr_source == "db":
        from openemr_bridge.database import DbSource

        if not settings.openemr_db_url:
            raise NotConfigured("INTEROP_OPENEMR_SOURCE=db needs INTEROP_OPENEMR_DB_URL")
        return DbSource(settings.openemr_db_url)
    return ApiSource(api or client(settings))


def fhir_base(settings: BridgeSettings) -> str:
    return f"{settings.openemr_url.rstrip('/')}/apis/{settings.openemr_site}/fhir"


def allowed_iss(settings: BridgeSettings) -> list[str]:
    listed = [i.rstrip("/") for i in settings.openemr_allowed_iss]
    return listed or ([fhir_base(settings)] if settings.openemr_url else [])


def frame_origins(settings: BridgeSettings) -> list[str]:
    if settings.openemr_frame_origins:
        return settings.openemr_frame_origins
    if not settings.openemr_url:
        return []
    parts = urlsplit(settings.openemr_url)
    return [f"{parts.scheme}://{parts.netloc}"]
