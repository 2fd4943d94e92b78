"""The imaging bridge's view of the operator's settings (built by `interop.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from dicomweb_bridge.pacs import PacsConfig


@dataclass(frozen=True)
class ImagingConfig:
    pacs: PacsConfig  # DICOMweb root, Orthanc REST root, credentials, outbound policy
    proxy_root: str  # this server's public DICOMweb root (FHIR base's origin + /dicomweb)
    dicom_issuers: dict[str, str] = field(default_factory=dict)
    dicom_patient_system: str = "urn:interop:dicom:patient-id"
    dicom_time_zone: str = "UTC"
    imaging_poll_seconds: float = 1.0
    imaging_reconcile_seconds: float = 3600.0
    orthanc_callback_token: SecretStr = SecretStr("")
