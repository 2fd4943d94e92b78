"""`interop imaging backfill`, the generic QIDO-RS poller, and the sync thread of `serve`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from imaging_support import wait_for

from dicomweb_bridge.poller import CURSOR, Poller
from dicomweb_bridge.runner import ImagingSync
from dicomweb_bridge.samples import StudySpec, study
from interop import cli
from interop.services import Loop
from interop.settings import get_settings


def _stow(bridge, spec: StudySpec) -> str:
    datasets = study(spec)
    bridge.pacs.stow(datasets)
    return str(datasets[0].StudyInstanceUID)


def test_backfill_command_loads_everything_once(imaging_app, imaging_client, orthanc,
                                                monkeypatch, capsys):  # fmt: skip
    bridge = imaging_app.state.imaging
    old = _stow(bridge, StudySpec(patient_id="BF-1", study_date="20190101"))
    new = _stow(bridge, StudySpec(patient_id="BF-2", study_date="20240601"))
    settings = imaging_app.state.settings
    for name, value in (("INTEROP_DATABASE_URL", settings.database_url),
                        ("INTEROP_ORTHANC_URL", settings.orthanc_url),
                        ("INTEROP_ORTHANC_USER", settings.orthanc_user),
                        ("INTEROP_ORTHANC_PASSWORD",
                         settings.orthanc_password.get_secret_value())):  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert cli.main(["imaging", "backfill", "--since", "2024-01-01", "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["studies"] == 1 and first["outcomes"] == {"created": 1}
        assert cli.main(["imaging", "backfill", "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["outcomes"] == {"created": 1, "unchanged": 1}
    finally:
        get_settings.cache_clear()
    for uid in (old, new):
        found = imaging_client.get(
            "/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}
        )
        assert found.json()["total"] == 1


def test_qido_poller_syncs_new_and_grown_studies(imaging_app, imaging_client, orthanc):
    bridge = imaging_app.state.imaging
    poller = Poller(bridge.pacs, bridge.syncer, bridge.state)
    today = datetime.now(UTC).strftime("%Y%m%d")
    old = _stow(bridge, StudySpec(patient_id="QP-0", study_date="20000101"))
    spec = StudySpec(patient_id="QP-1", series=(("CT", 1),), study_date=today)
    datasets = study(spec)
    bridge.pacs.stow(datasets)
    assert poller.poll().outcomes == {"created": 2}  # first poll: everything
    assert bridge.state.cursor(CURSOR)
    bridge.syncer.remove_study(old)  # an old study is not looked at again
    assert poller.poll().outcomes == {}  # nothing new: no sync at all
    extra = study(StudySpec(patient_id="QP-1", study_uid=str(datasets[0].StudyInstanceUID),
                            series=(("MR", 2),), study_date=today))  # fmt: skip
    bridge.pacs.stow(extra)
    assert poller.poll().outcomes == {"updated": 1}
    uid = datasets[0].StudyInstanceUID
    res = imaging_client.get(
        "/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}
    ).json()
    assert res["entry"][0]["resource"]["numberOfInstances"] == 3


def test_serve_sync_thread_follows_the_feed_and_stops(imaging_app, imaging_client, orthanc):
    bridge = imaging_app.state.imaging
    # the service `interop serve` runs (the app keeps using this bridge after the test)
    runner = Loop("imaging-sync", ImagingSync(bridge).step, 1.0)
    runner.start()
    try:
        datasets = study(StudySpec(patient_id="RUN-1", series=(("CT", 1), ("MR", 1))))
        bridge.pacs.stow(datasets)
        query = {"identifier": f"urn:dicom:uid|urn:oid:{datasets[0].StudyInstanceUID}"}

        def instances() -> int:
            found = imaging_client.get("/fhir/ImagingStudy", params=query).json()
            return found["entry"][0]["resource"]["numberOfInstances"] if found["total"] else 0

        assert wait_for(lambda: instances() == 2, 20)
        # a series deleted in Orthanc: its Lua hook reports only Orthanc's series id, which
        # asks the sync thread for a reconciliation
        series = bridge.pacs.orthanc_lookup(str(datasets[-1].SeriesInstanceUID), "Series")
        with orthanc.client() as http:
            assert http.delete(f"/series/{series}").status_code == 200
        callback = imaging_client.post(
            "/imaging/orthanc/deleted",
            json={"ResourceType": "Series", "ID": series},
            headers={"Authorization": "Bearer callback-token"},
        )
        assert callback.status_code == 204
        assert wait_for(lambda: instances() == 1, 20)
    finally:
        assert runner.health()["status"] == "ok"
        runner.stop(10)
    assert runner.health()["status"] == "stopped"
