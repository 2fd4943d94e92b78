"""Orthanc change feed -> ImagingStudy: C-STORE in, FHIR search out; idempotent; resumable."""

from __future__ import annotations

from pathlib import Path

from imaging_support import storescu, wait_for

from dicomweb_bridge.feed import CURSOR, ChangeFeed
from dicomweb_bridge.samples import StudySpec, study, to_bytes


def _write(tmp_path: Path, spec: StudySpec) -> tuple[str, list[Path]]:
    files = []
    datasets = study(spec)
    for i, ds in enumerate(datasets):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(to_bytes(ds))
        files.append(path)
    return str(datasets[0].StudyInstanceUID), files


def _search(client, uid: str) -> dict:
    resp = client.get("/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"})
    assert resp.status_code == 200
    return resp.json()


def test_cstore_to_fhir_search(imaging_app, imaging_client, orthanc, tmp_path) -> None:
    spec = StudySpec(patient_id="CS-1", patient_name="Müller^Jürgen", charset="ISO_IR 100",
                     series=(("CT", 3), ("MR", 2)), accession="ACC-CS-1")  # fmt: skip
    uid, files = _write(tmp_path, spec)
    storescu(orthanc, files)
    feed = imaging_app.state.imaging.feed
    assert wait_for(lambda: feed.poll() > 0), "no StableStudy arrived"
    found = _search(imaging_client, uid)
    assert found["total"] == 1
    res = found["entry"][0]["resource"]
    assert res["numberOfSeries"] == 2 and res["numberOfInstances"] == 5
    patient = imaging_client.get(f"/fhir/{res['subject']['reference']}").json()
    assert patient["identifier"][0]["value"] == "CS-1"
    assert patient["name"][0]["family"] == "Müller"
    by_patient = imaging_client.get("/fhir/ImagingStudy", params={"patient.identifier": "CS-1"})
    assert by_patient.json()["total"] == 1


def test_resync_changes_nothing_and_cursor_survives_restart(imaging_app, imaging_client,
                                                            orthanc, tmp_path) -> None:  # fmt: skip
    bridge = imaging_app.state.imaging
    uid, files = _write(tmp_path, StudySpec(patient_id="CS-2"))
    storescu(orthanc, files)
    assert wait_for(lambda: bridge.feed.poll() > 0)
    first = _search(imaging_client, uid)["entry"][0]["resource"]
    cursor = bridge.state.cursor(CURSOR)
    assert cursor is not None and int(cursor) > 0
    # a new follower (a restarted process) starts at the stored cursor: nothing to do
    restarted = ChangeFeed(bridge.pacs, bridge.syncer, bridge.state)
    assert restarted.poll() == 0
    # replaying the whole feed applies the study again: no new version
    bridge.state.set_cursor(CURSOR, "0")
    assert restarted.poll() >= 1
    again = _search(imaging_client, uid)["entry"][0]["resource"]
    assert again["meta"]["versionId"] == first["meta"]["versionId"] == "1"
    history = imaging_client.get(f"/fhir/ImagingStudy/{first['id']}/_history").json()
    assert history["total"] == 1
    assert bridge.syncer.sync_study(uid).outcome == "unchanged"


def test_study_is_based_on_the_hl7_order_with_its_accession_number(imaging_app, imaging_client,
                                                                   orthanc, tmp_path):  # fmt: skip
    order = imaging_client.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{"code": "FILL"}]}, "value": "ACC-77"}],
        "subject": {"display": "someone"}}).json()  # fmt: skip
    bridge = imaging_app.state.imaging
    datasets = study(StudySpec(patient_id="ORD-1", accession="ACC-77"))
    bridge.pacs.stow(datasets)
    result = bridge.syncer.sync_study(str(datasets[0].StudyInstanceUID))
    res = imaging_client.get(f"/fhir/ImagingStudy/{result.resource_id}").json()
    assert res["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    found = imaging_client.get(
        "/fhir/ImagingStudy", params={"basedon": f"ServiceRequest/{order['id']}"}
    )
    assert found.json()["total"] == 1
