"""The bridge's parts, built once from its config (app, `interop serve`, CLI share this)."""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_bridge.config import ImagingConfig
from dicomweb_bridge.feed import ChangeFeed
from dicomweb_bridge.pacs import Pacs
from dicomweb_bridge.state import BridgeState
from dicomweb_bridge.sync import Syncer
from fhir_server.store.repository import HasStore
from mappers.dicom import Options


def proxy_root(fhir_base: str) -> str:
    """Public DICOMweb root of this server: the FHIR base's origin + /dicomweb."""
    origin = fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base
    return f"{origin}/dicomweb"


@dataclass
class Bridge:
    config: ImagingConfig
    pacs: Pacs
    state: BridgeState
    syncer: Syncer
    feed: ChangeFeed | None

    @classmethod
    def build(cls, config: ImagingConfig, ctx: HasStore) -> Bridge:
        pacs = Pacs(config.pacs)
        state = BridgeState(ctx.store.engine)
        options = Options(
            issuers=config.dicom_issuers,
            default_system=config.dicom_patient_system,
            time_zone=config.dicom_time_zone,
            endpoint_address=config.proxy_root,
        )
        syncer = Syncer(ctx, pacs, state, options)
        feed = ChangeFeed(pacs, syncer, state) if pacs.is_orthanc else None
        return cls(config, pacs, state, syncer, feed)

    def close(self) -> None:
        self.pacs.close()
