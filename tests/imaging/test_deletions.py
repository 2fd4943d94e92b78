"""Deletions: Orthanc's Lua hook calls back, reconciliation catches the rest; history is kept."""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn
from imaging_support import wait_for

from dicomweb_bridge.poller import Poller
from dicomweb_bridge.samples import StudySpec, study


def _seed(bridge, spec: StudySpec):
    datasets = study(spec)
    bridge.pacs.stow(datasets)
    result = bridge.syncer.sync_study(str(datasets[0].StudyInstanceUID))
    assert result.outcome == "created"
    return datasets, result.resource_id


def _status(client, resource_id: str) -> int:
    return client.get(f"/fhir/ImagingStudy/{resource_id}").status_code


@pytest.fixture
def served(imaging_app, orthanc):
    """Our app on the port Orthanc's Lua script posts to."""
    config = uvicorn.Config(imaging_app, host="127.0.0.1", port=orthanc.callback_port,
                            log_config=None, lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 10)
    yield imaging_app
    server.should_exit = True
    thread.join(10)


def test_orthanc_lua_callback_deletes_the_imaging_study(served, imaging_client, orthanc):
    bridge = served.state.imaging
    datasets, rid = _seed(bridge, StudySpec(patient_id="DEL-1"))
    orthanc_id = bridge.state.study(str(datasets[0].StudyInstanceUID)).orthanc_id
    # computed from PatientID|StudyInstanceUID, it must be the id Orthanc itself uses
    assert orthanc_id == bridge.pacs.orthanc_lookup(str(datasets[0].StudyInstanceUID))
    with orthanc.client() as http:
        assert http.delete(f"/studies/{orthanc_id}").status_code == 200
    assert wait_for(lambda: _status(imaging_client, rid) == 410, 10)
    history = imaging_client.get(f"/fhir/ImagingStudy/{rid}/_history").json()
    assert history["total"] == 2


def test_callback_needs_the_token(imaging_client):
    url = "/imaging/orthanc/deleted"
    body = {"ResourceType": "Study", "ID": "x"}
    assert imaging_client.post(url, json=body).status_code == 401
    wrong = imaging_client.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = imaging_client.post(url, json=body, headers={"Authorization": "Bearer callback-token"})
    assert ok.status_code == 204
    bad = imaging_client.post(url, content=b"[", headers={"Authorization": "Bearer callback-token"})
    assert bad.status_code == 400


def test_reconcile_removes_vanished_studies_and_updates_shrunk_ones(imaging_app, imaging_client,
                                                                   orthanc):  # fmt: skip
    bridge = imaging_app.state.imaging
    kept, kept_id = _seed(bridge, StudySpec(patient_id="REC-1", series=(("CT", 2), ("MR", 1))))
    gone, gone_id = _seed(bridge, StudySpec(patient_id="REC-2"))
    with httpx.Client(base_url=orthanc.url, auth=orthanc.auth) as http:
        # delete behind our back, without callbacks reaching us (nothing listens)
        http.delete(f"/studies/{bridge.state.study(str(gone[0].StudyInstanceUID)).orthanc_id}")
        series = bridge.pacs.orthanc_lookup(str(kept[-1].SeriesInstanceUID), "Series")
        http.delete(f"/series/{series}")
    summary = Poller(bridge.pacs, bridge.syncer, bridge.state).reconcile()
    assert summary.outcomes == {"deleted": 1, "updated": 1}
    assert _status(imaging_client, gone_id) == 410
    shrunk = imaging_client.get(f"/fhir/ImagingStudy/{kept_id}").json()
    assert shrunk["numberOfInstances"] == 2 and shrunk["numberOfSeries"] == 1
