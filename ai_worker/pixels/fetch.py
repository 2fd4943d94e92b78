"""WADO-RS retrieval of a study, series by series, in the instances' ORIGINAL transfer syntax.

`transfer-syntax=*` asks the PACS not to transcode: Orthanc 1.10 cannot transcode RLE, JPEG 2000
or HTJ2K at all, and transcoding would cost the PACS more than decoding costs us. Instances are
yielded as the multipart response streams in, so a series is never held encoded in memory
whole. Connection failures and 5xx answers are transient (retried); 404 is bad input.
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

from ai_worker.errors import BadInput, TransientError
from outbound import Policy
from outbound.requests_adapter import session as outbound_session

ORIGINAL_SYNTAX = (("application/dicom", "*"),)
SERIES_UID = "0020000E"
MODALITY = "00080060"


class DicomWebSource:
    """A DICOMweb root (INTEROP_DICOMWEB_URL) with optional basic-auth credentials."""

    def __init__(self, url: str, user: str = "", password: str = "", timeout: float = 60.0) -> None:
        if not url:
            raise BadInput("INTEROP_DICOMWEB_URL is not set: imaging is off, nothing to fetch")
        policy = Policy("PACS", read_timeout=timeout, deadline=None, max_bytes=None)
        session = outbound_session(policy.allowing(url), (user, password) if user else None)
        self.client = DICOMwebClient(url.rstrip("/"), session=session, timeout=timeout)
        self.client.set_http_retry_params(retry=False)  # the job retries, with backoff

    def series(self, study_uid: str) -> list[tuple[str, str]]:
        """(SeriesInstanceUID, Modality) of each series of a study (QIDO-RS)."""
        try:
            found = self.client.search_for_series(study_instance_uid=study_uid)
        except requests.HTTPError as exc:
            raise _classify(exc, f"study {study_uid}") from exc
        except requests.RequestException as exc:
            raise TransientError(f"PACS unreachable: {exc}") from exc
        out = []
        for item in found:
            uid = (item.get(SERIES_UID, {}).get("Value") or [""])[0]
            modality = (item.get(MODALITY, {}).get("Value") or [""])[0]
            if uid:
                out.append((str(uid), str(modality)))
        if not out:
            raise BadInput(f"the PACS has no series for study {study_uid}")
        return out

    def instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """The instances of one series, streamed, each in its stored transfer syntax."""
        try:
            yield from self.client.iter_series(study_uid, series_uid, media_types=ORIGINAL_SYNTAX)
        except requests.HTTPError as exc:
            raise _classify(exc, f"series {series_uid}") from exc
        except requests.RequestException as exc:
            raise TransientError(f"PACS unreachable: {exc}") from exc


def _classify(exc: requests.HTTPError, what: str) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    if status in (404, 410):
        return BadInput(f"{what} is not in the PACS (HTTP {status})")
    if status in (400, 406, 415):
        return BadInput(f"the PACS refused to send {what} (HTTP {status})")
    return TransientError(f"the PACS failed on {what} (HTTP {status})")
