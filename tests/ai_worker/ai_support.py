"""Helpers of the AI worker tests: a real Orthanc with DICOMweb, settings, uploads.

Named apart from conftest.py: a test module importing "conftest" may get another folder's.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest
import requests
import store_support
from ci_support import IN_CI
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REDIS_URL = os.environ.get("INTEROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available; set CI=true to make this a failure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    url: str
    user: str
    password: str

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def stow(self, datasets: list[Dataset]) -> None:
        session = requests.Session()
        session.auth = (self.user, self.password)
        DICOMwebClient(self.dicomweb, session=session).store_instances(datasets)


BASE = "http://testserver/fhir"


def ai_settings(database_url: str, orthanc: Orthanc, **extra: object):  # type: ignore[no-untyped-def]
    from interop.settings import Settings

    values: dict[str, object] = {
        "database_url": database_url,
        "auth": "off",
        "base_url": BASE,
        "dicomweb_url": orthanc.dicomweb,
        "orthanc_user": orthanc.user,
        "orthanc_password": orthanc.password,
        "ai_rules": [{"model": "ct-classical", "modality": "CT"}],
        "ai_lease_seconds": 3.0,
        "ai_retry_backoff": 0.2,
        "ai_max_retries": 2,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


def clear_tables(app) -> None:  # type: ignore[no-untyped-def]
    store_support.clear_tables(app.state.store.engine)


def post(client, resource: dict) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict = response.json()
    return created


def upload_study(client, orthanc: Orthanc, datasets: list[Dataset], mrn: str = "MRN1"):  # type: ignore[no-untyped-def]
    """STOW the series to Orthanc and create its Patient and ImagingStudy in our store (the
    imaging bridge does this in production)."""
    orthanc.stow(datasets)
    first = datasets[0]
    patient = post(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:mrn", "value": mrn}],
            "name": [{"family": "Phantom", "given": ["Test"]}],
        },
    )
    study = post(
        client,
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [
                {"system": "urn:dicom:uid", "value": f"urn:oid:{first.StudyInstanceUID}"}
            ],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
            "description": str(first.StudyDescription),
            "numberOfSeries": 1,
            "numberOfInstances": len(datasets),
            "series": [
                {
                    "uid": str(first.SeriesInstanceUID),
                    "modality": {
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": "CT",
                    },
                    "bodySite": {
                        "system": "http://snomed.info/sct",
                        "code": "51185008",
                        "display": "CHEST",
                    },  # fmt: skip
                    "numberOfInstances": len(datasets),
                }
            ],
        },
    )
    return patient, study
