"""The PACS as this server sees it: DICOMweb (any PACS) plus Orthanc's REST API when known.

One authenticated client per process; credentials stay here and are never logged. Plain
calls use httpx; STOW-RS of datasets goes through `dicomweb-client`, as the issue asks, so
multipart encoding is the reference implementation's.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydicom.dataset import Dataset

import outbound
from mappers.dicom import DicomJson
from outbound import Policy

log = logging.getLogger("interop.imaging")
DICOM_JSON = "application/dicom+json"


def orthanc_study_id(patient_id: str, study_uid: str) -> str:
    """Orthanc's id of a study: SHA-1 of `PatientID|StudyInstanceUID` in groups of 8 (the
    same on every Orthanc), so a sync needs no lookup request to learn it."""
    digest = hashlib.sha1(f"{patient_id}|{study_uid}".encode()).hexdigest()  # noqa: S324
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


class PacsError(RuntimeError):
    """The PACS could not be reached or answered with an error (retry later)."""


@dataclass(frozen=True)
class PacsConfig:
    dicomweb_url: str
    orthanc_url: str = ""
    user: str = ""
    password: str = ""
    timeout: float = 60.0
    outbound: Policy | None = None  # INTEROP_OUTBOUND_*; None: defaults from `timeout`

    def policy(self) -> Policy:
        """The outbound rules for the PACS: its configured hosts are always allowed."""
        policy = self.outbound or Policy("PACS", read_timeout=self.timeout, deadline=None,
                                         max_bytes=None)  # fmt: skip
        return policy.allowing(self.dicomweb_url, self.orthanc_url)

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"PacsConfig(dicomweb_url={self.dicomweb_url!r}, orthanc_url={self.orthanc_url!r})"


class Pacs:
    def __init__(self, config: PacsConfig) -> None:
        self.config = config
        auth = httpx.BasicAuth(config.user, config.password) if config.user else None
        self.auth = auth
        self.http = outbound.Client(config.policy(), auth=auth)
        self._dicomweb: Any = None
        self._lock = threading.Lock()

    @property
    def dicomweb_url(self) -> str:
        return self.config.dicomweb_url

    @property
    def is_orthanc(self) -> bool:
        return bool(self.config.orthanc_url)

    def close(self) -> None:
        self.http.close()

    def _get(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            try:
                return self.http.get(url, **kwargs)
            except httpx.RemoteProtocolError:  # a pooled connection the PACS had just closed
                return self.http.get(url, **kwargs)
        except httpx.HTTPError as exc:
            raise PacsError(f"PACS unreachable: {type(exc).__name__}") from exc

    # -- DICOMweb -----------------------------------------------------------------------------

    def study_metadata(self, study_uid: str) -> list[DicomJson]:
        """WADO-RS metadata of every instance of the study; [] when the PACS has none."""
        resp = self._get(f"{self.dicomweb_url}/studies/{study_uid}/metadata",
                         headers={"Accept": DICOM_JSON})  # fmt: skip
        if resp.status_code in (404, 204):
            return []
        if resp.status_code != 200:
            raise PacsError(f"WADO-RS metadata of {study_uid}: HTTP {resp.status_code}")
        data = resp.json()
        return data if isinstance(data, list) else []

    def search_studies(self, params: dict[str, str]) -> list[DicomJson]:
        resp = self._get(f"{self.dicomweb_url}/studies", params=params,
                         headers={"Accept": DICOM_JSON})  # fmt: skip
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise PacsError(f"QIDO-RS studies: HTTP {resp.status_code}")
        data = resp.json() if resp.content else []
        return data if isinstance(data, list) else []

    def has_study(self, study_uid: str) -> bool:
        """Whether the PACS holds a study with this UID (for any patient)."""
        params = {"StudyInstanceUID": study_uid, "limit": "1"}
        return bool(self.search_studies(params))

    def iter_studies(
        self, params: dict[str, str] | None = None, page: int = 200
    ) -> Iterator[DicomJson]:
        """Every study QIDO-RS returns, page by page (limit/offset)."""
        offset = 0
        while True:
            batch = self.search_studies({**(params or {}), "limit": str(page),
                                         "offset": str(offset)})  # fmt: skip
            yield from batch
            if len(batch) < page:
                return
            offset += len(batch)

    def stow(self, datasets: Sequence[Dataset]) -> Dataset:
        """STOW-RS through dicomweb-client; returns the PACS's response dataset."""
        import requests

        try:
            from dicomweb_client import DICOMwebClient
        except ImportError as exc:  # an optional extra (pyproject: imaging)
            raise PacsError(
                "storing in the PACS needs the 'imaging' extra: "
                "pip install 'interop-server[imaging]'"
            ) from exc

        from outbound.requests_adapter import session as outbound_session

        with self._lock:
            if self._dicomweb is None:
                auth = (self.config.user, self.config.password) if self.config.user else None
                session = outbound_session(self.config.policy(), auth)
                self._dicomweb = DICOMwebClient(self.dicomweb_url, session=session,
                                                timeout=self.config.timeout)  # fmt: skip
        try:
            result: Dataset = self._dicomweb.store_instances(list(datasets))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 409 and exc.response is not None:  # some stored, some failed
                from pydicom import Dataset as Ds

                return Ds.from_json(exc.response.json())
            raise PacsError(f"STOW-RS failed: HTTP {status}") from exc
        except requests.RequestException as exc:
            raise PacsError(f"STOW-RS failed: {type(exc).__name__}") from exc
        return result

    # -- Orthanc REST --------------------------------------------------------------------------

    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        resp = self._get(f"{self.config.orthanc_url}/changes",
                         params={"since": since, "limit": limit})  # fmt: skip
        if resp.status_code != 200:
            raise PacsError(f"Orthanc /changes: HTTP {resp.status_code}")
        data: dict[str, Any] = resp.json()
        return data

    def last_change(self) -> int:
        resp = self._get(f"{self.config.orthanc_url}/changes", params={"last": ""})
        if resp.status_code != 200:
            raise PacsError(f"Orthanc /changes?last: HTTP {resp.status_code}")
        return int(resp.json().get("Last", 0))

    def orthanc_study_uid(self, orthanc_id: str) -> str | None:
        resp = self._get(f"{self.config.orthanc_url}/studies/{orthanc_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise PacsError(f"Orthanc /studies/{orthanc_id}: HTTP {resp.status_code}")
        uid = resp.json().get("MainDicomTags", {}).get("StudyInstanceUID")
        return str(uid) if uid else None

    def orthanc_lookup(self, uid: str, level: str = "Study") -> str | None:
        """Orthanc's id of the resource with this DICOM UID (None when absent)."""
        try:
            resp = self.http.post(f"{self.config.orthanc_url}/tools/lookup", content=uid)
        except httpx.HTTPError as exc:
            raise PacsError(f"PACS unreachable: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            return None
        for item in resp.json():
            if item.get("Type") == level:
                return str(item["ID"])
        return None

    def orthanc_delete(self, level: str, orthanc_id: str) -> bool:
        path = {"Study": "studies", "Series": "series", "Instance": "instances"}[level]
        try:
            resp = self.http.delete(f"{self.config.orthanc_url}/{path}/{orthanc_id}")
        except httpx.HTTPError as exc:
            raise PacsError(f"PACS unreachable: {type(exc).__name__}") from exc
        if resp.status_code not in (200, 404):
            raise PacsError(f"Orthanc DELETE /{path}/{orthanc_id}: HTTP {resp.status_code}")
        return resp.status_code == 200
