"""The secured DICOMweb proxy: SMART scopes decide, patient tokens see only their studies."""

from __future__ import annotations

import io

import pydicom
import pytest

from dicomweb_bridge.samples import StudySpec, study

MULTIPART_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def seeded(imaging_app):
    """Two patients with one study each, stored in Orthanc and synced."""
    bridge = imaging_app.state.imaging
    out = {}
    for name, spec in (("a", StudySpec(patient_id="PX-A", series=(("CT", 2), ("MR", 1)))),
                       ("b", StudySpec(patient_id="PX-B", series=(("CT", 1),)))):  # fmt: skip
        datasets = study(spec)
        bridge.pacs.stow(datasets)
        result = bridge.syncer.sync_study(datasets[0].StudyInstanceUID)
        res = imaging_app.state.store.read("ImagingStudy", result.resource_id)
        import orjson

        body = orjson.loads(res.body)
        out[name] = {"study": str(datasets[0].StudyInstanceUID),
                     "series": [str(ds.SeriesInstanceUID) for ds in datasets],
                     "instance": str(datasets[0].SOPInstanceUID),
                     "patient": body["subject"]["reference"].split("/")[1]}  # fmt: skip
    return out


def token(app, scope: str, patient: str | None = None) -> dict[str, str]:
    context = {"patient": patient} if patient else None
    jwt = app.state.auth.tokens.access_token(
        client_id="imaging-test", subject="tester", scope=scope, lifetime=300, context=context
    )
    return {"Authorization": f"Bearer {jwt}"}


def _uids(resp) -> set[str]:
    return {item["0020000D"]["Value"][0] for item in resp.json()}


def test_no_token_is_401_and_wrong_scope_is_403(imaging_auth_client, seeded) -> None:
    app = imaging_auth_client.app
    assert imaging_auth_client.get("/dicomweb/studies").status_code == 401
    other = token(app, "system/Observation.rs")
    resp = imaging_auth_client.get("/dicomweb/studies", headers=other)
    assert resp.status_code == 403 and resp.json()["resourceType"] == "OperationOutcome"


def test_system_scope_sees_every_study(imaging_auth_client, seeded) -> None:
    headers = token(imaging_auth_client.app, "system/ImagingStudy.rs")
    resp = imaging_auth_client.get("/dicomweb/studies", headers=headers)
    assert resp.status_code == 200
    assert _uids(resp) == {seeded["a"]["study"], seeded["b"]["study"]}
    meta = imaging_auth_client.get(f"/dicomweb/studies/{seeded['b']['study']}/metadata",
                                   headers=headers)  # fmt: skip
    assert meta.status_code == 200 and len(meta.json()) == 1
    assert "BulkDataURI" not in meta.text or "http://testserver/dicomweb/" in meta.text


def test_patient_token_is_confined_to_its_patient(imaging_auth_client, seeded) -> None:
    a, b = seeded["a"], seeded["b"]
    headers = token(imaging_auth_client.app, "patient/ImagingStudy.rs", a["patient"])
    listed = imaging_auth_client.get("/dicomweb/studies", headers=headers)
    assert listed.status_code == 200 and _uids(listed) == {a["study"]}
    series = imaging_auth_client.get("/dicomweb/series", headers=headers)
    assert {s["0020000D"]["Value"][0] for s in series.json()} == {a["study"]}
    own = imaging_auth_client.get(f"/dicomweb/studies/{a['study']}/series", headers=headers)
    assert own.status_code == 200 and len(own.json()) == 2
    for path in (
        f"studies/{b['study']}",
        f"studies/{b['study']}/metadata",
        f"studies/{b['study']}/series/{b['series'][0]}/instances/{b['instance']}",
    ):
        denied = imaging_auth_client.get(f"/dicomweb/{path}", headers=headers)
        assert denied.status_code == 403, path
    wado = imaging_auth_client.get(
        f"/dicomweb/studies/{a['study']}/series/{a['series'][0]}/instances/{a['instance']}",
        headers={**headers, "Accept": MULTIPART_DICOM},
    )
    assert wado.status_code == 200
    assert wado.headers["content-type"].startswith("multipart/related")
    boundary = wado.headers["content-type"].split("boundary=")[1].strip('"')
    part = wado.content.split(f"--{boundary}".encode())[1].split(b"\r\n\r\n", 1)[1]
    ds = pydicom.dcmread(io.BytesIO(part[:-2]), force=True)
    assert ds.SOPInstanceUID == a["instance"]
    instances = imaging_auth_client.get("/dicomweb/instances", headers=headers)
    assert {i["0020000D"]["Value"][0] for i in instances.json()} == {a["study"]}


def test_frames_and_transfer_syntax_pass_through(imaging_auth_client, seeded) -> None:
    a = seeded["a"]
    headers = token(imaging_auth_client.app, "system/ImagingStudy.rs")
    base = f"/dicomweb/studies/{a['study']}/series/{a['series'][0]}/instances/{a['instance']}"
    frames = imaging_auth_client.get(f"{base}/frames/1", headers={
        **headers, "Accept": 'multipart/related; type="application/octet-stream"; '
                             "transfer-syntax=1.2.840.10008.1.2.1"})  # fmt: skip
    assert frames.status_code == 200
    assert "application/octet-stream" in frames.headers["content-type"]
    assert len(frames.content) >= 8 * 8 * 2
    rendered = imaging_auth_client.get(f"{base}/rendered",
                                       headers={**headers, "Accept": "image/png"})  # fmt: skip
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")


def test_admin_deletion_updates_then_removes_the_study(
    imaging_auth_client, seeded, orthanc
) -> None:
    a = seeded["a"]
    app = imaging_auth_client.app
    confined = token(app, "patient/ImagingStudy.cruds", a["patient"])
    refused = imaging_auth_client.delete(f"/dicomweb/studies/{a['study']}", headers=confined)
    assert refused.status_code == 403
    admin = token(app, "system/ImagingStudy.cruds system/Patient.rs")
    mr_series = a["series"][-1]
    gone = imaging_auth_client.delete(f"/dicomweb/studies/{a['study']}/series/{mr_series}",
                                      headers=admin)  # fmt: skip
    assert gone.status_code == 200 and gone.json()["imagingStudy"] == "updated"
    study_id = gone.json()["id"]
    res = imaging_auth_client.get(f"/fhir/ImagingStudy/{study_id}", headers=admin).json()
    assert res["numberOfSeries"] == 1 and res["numberOfInstances"] == 2
    whole = imaging_auth_client.delete(f"/dicomweb/studies/{a['study']}", headers=admin)
    assert whole.status_code == 200 and whole.json()["imagingStudy"] == "deleted"
    assert (
        imaging_auth_client.get(f"/fhir/ImagingStudy/{study_id}", headers=admin).status_code == 410
    )
    history = imaging_auth_client.get(f"/fhir/ImagingStudy/{study_id}/_history", headers=admin)
    assert history.json()["total"] == 3
    missing = imaging_auth_client.delete(f"/dicomweb/studies/{a['study']}", headers=admin)
    assert missing.status_code == 404


def test_dicomweb_access_is_audited(imaging_audited_client, seeded):
    app = imaging_audited_client.app
    a, b = seeded["a"], seeded["b"]
    headers = token(app, "patient/ImagingStudy.rs", a["patient"])
    assert imaging_audited_client.get(f"/dicomweb/studies/{a['study']}/metadata",
                                      headers=headers).status_code == 200  # fmt: skip
    assert imaging_audited_client.get(f"/dicomweb/studies/{b['study']}/metadata",
                                      headers=headers).status_code == 403  # fmt: skip
    app.state.audit.flush()
    admin = token(app, "system/AuditEvent.rs")
    events = imaging_audited_client.get("/fhir/AuditEvent", params={"_count": "100"},
                                        headers=admin).json()  # fmt: skip

    def about_images(event: dict) -> bool:
        return any(x.get("what", {}).get("reference", "").startswith("ImagingStudy/")
                   for x in event.get("entity", []))  # fmt: skip

    resources = [e["resource"] for e in events.get("entry", [])]
    assert any(about_images(e) and e.get("outcome") == "0" for e in resources), events
    assert any(e.get("outcome") not in (None, "0") for e in resources), events
