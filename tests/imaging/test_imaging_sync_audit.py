"""An Orthanc sync leaves an AuditEvent naming the PACS and every resource it changed."""

from __future__ import annotations

from audit_support import assert_change_audited, audited

from dicomweb_bridge.samples import StudySpec, study


def test_orthanc_sync_is_audited_with_the_pacs(imaging_app, imaging_client, orthanc):  # type: ignore[no-untyped-def]
    bridge = imaging_app.state.imaging
    datasets = study(StudySpec(patient_id="AUD-1", study_date="20240601"))
    bridge.pacs.stow(datasets)
    store = imaging_app.state.store
    with audited(store):
        synced = bridge.syncer.sync_study(str(datasets[0].StudyInstanceUID))
    assert synced.outcome == "created"
    patients = imaging_client.get("/fhir/Patient").json()["entry"]
    changed = [f"ImagingStudy/{synced.resource_id}"] + [
        f"Patient/{e['resource']['id']}" for e in patients
    ]
    assert_change_audited(store, changed, "orthanc", bridge.pacs.dicomweb_url)
