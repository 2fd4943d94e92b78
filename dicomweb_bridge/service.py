"""The bridge's parts, built once from the settings (app, `interop serve`, CLI share this)."""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_bridge.feed import ChangeFeed
from dicomweb_bridge.pacs import Pacs, PacsConfig
from dicomweb_bridge.state import BridgeState
from dicomweb_bridge.sync import Syncer
from fhir_server.api.interactions import Context
from interop.settings import Settings
from mappers.dicom import Options


def proxy_root(settings: Settings) -> str:
    """Public DICOMweb root of this server: the FHIR base's origin + /dicomweb."""
    base = settings.effective_base_url
    origin = base[: -len("/fhir")] if base.endswith("/fhir") else base
    return f"{origin}/dicomweb"


@dataclass
class Bridge:
    settings: Settings
    pacs: Pacs
    state: BridgeState
    syncer: Syncer
    feed: ChangeFeed | None

    @classmethod
    def build(cls, settings: Settings, ctx: Context) -> Bridge | None:
        """None when imaging is not configured."""
        config = PacsConfig.from_settings(settings)
        if config is None:
            return None
        pacs = Pacs(config)
        state = BridgeState(ctx.store.engine)
        options = Options(
            issuers=settings.dicom_issuers,
            default_system=settings.dicom_patient_system,
            time_zone=settings.dicom_time_zone,
            endpoint_address=proxy_root(settings),
        )
        syncer = Syncer(ctx, pacs, state, options)
        feed = ChangeFeed(pacs, syncer, state) if pacs.is_orthanc else None
        return cls(settings, pacs, state, syncer, feed)

    def close(self) -> None:
        self.pacs.close()
