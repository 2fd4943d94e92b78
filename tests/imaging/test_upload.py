"""POST /imaging/upload and STOW-RS on /dicomweb/studies: per-file results, patient rules."""

from __future__ import annotations

import io

import httpx
import pydicom
from pydicom.data import get_testdata_file

from dicomweb_bridge.multipart import encode
from dicomweb_bridge.samples import StudySpec, study, to_bytes


def _files(spec: StudySpec) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"scan/{i}.dcm", to_bytes(ds), "application/dicom"))
            for i, ds in enumerate(study(spec))]  # fmt: skip


def _pacs_patient_id(orthanc, study_uid: str) -> str:
    meta = httpx.get(f"{orthanc.dicomweb}/studies/{study_uid}/metadata", auth=orthanc.auth).json()
    return str(meta[0]["00100020"]["Value"][0])


def test_upload_reports_each_file_and_creates_the_patient(imaging_client, orthanc) -> None:
    files = _files(StudySpec(patient_id="UP-1", patient_name="Nakamura^Aiko", sex="F"))
    broken = to_bytes(study(StudySpec())[0])[:300]
    files += [("file", ("notes.txt", b"hello, not DICOM", "text/plain")),
              ("file", ("broken.dcm", broken, "application/dicom"))]  # fmt: skip
    resp = imaging_client.post("/imaging/upload", files=files)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert len(body["stored"]) == 3
    reasons = {f["file"]: f["reason"] for f in body["failed"]}
    assert set(reasons) == {"notes.txt", "broken.dcm"}
    assert "not a DICOM file" in reasons["notes.txt"]
    (res,) = body["imagingStudies"]
    assert res["numberOfInstances"] == 3 and res["numberOfSeries"] == 2
    patient = imaging_client.get(f"/fhir/{res['subject']['reference']}").json()
    assert patient["identifier"][0]["value"] == "UP-1" and patient["gender"] == "female"


def test_upload_for_a_known_patient_with_grouping(imaging_client, orthanc) -> None:
    known = imaging_client.post("/fhir/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": "urn:hosp:mrn", "value": "42"}],
        "name": [{"family": "Okafor", "given": ["Chidi"]}]}).json()  # fmt: skip
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ct.StudyDate
    files = [("file", ("a/ct.dcm", to_bytes(ct), "application/dicom")),
             ("file", ("b/mr.dcm", to_bytes(mr), "application/dicom"))]  # fmt: skip
    resp = imaging_client.post("/imaging/upload", files=files, data={
        "patient": f"Patient/{known['id']}", "description": "Outside films",
        "grouping": "true"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    body = resp.json()
    uids = {s["studyInstanceUid"] for s in body["stored"]}
    assert len(uids) == 1 and ct.StudyInstanceUID not in uids  # one new study for the upload
    (res,) = body["imagingStudies"]
    assert res["subject"]["reference"] == f"Patient/{known['id']}"
    assert res["numberOfSeries"] == 2 and res["description"] == "Outside films"
    assert "started" in res  # the missing StudyDate was filled
    assert _pacs_patient_id(orthanc, uids.pop()) == "42"
    assert imaging_client.get("/fhir/Patient").json()["total"] == 1


def test_upload_for_a_patient_without_identifiers(imaging_client, orthanc) -> None:
    bare = imaging_client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
    resp = imaging_client.post("/imaging/upload", files=_files(StudySpec()),
                               data={"patient": f"Patient/{bare['id']}"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    (res,) = resp.json()["imagingStudies"]
    assert res["subject"]["reference"] == f"Patient/{bare['id']}"
    assert imaging_client.get("/fhir/Patient").json()["total"] == 1


def test_upload_errors_are_operation_outcomes(imaging_client) -> None:
    none = imaging_client.post("/imaging/upload", data={"description": "x"})
    assert none.status_code == 400 and none.json()["resourceType"] == "OperationOutcome"
    bad_patient = imaging_client.post("/imaging/upload", files=_files(StudySpec()),
                                      data={"patient": "Patient/nope"})  # fmt: skip
    assert bad_patient.status_code == 404
    junk = imaging_client.post(
        "/imaging/upload", files=[("file", ("x.bin", b"\0" * 200, "application/dicom"))]
    )
    assert junk.status_code == 422 and junk.json()["failed"][0]["file"] == "x.bin"


def test_stow_rs_streams_through_and_syncs(imaging_client, orthanc) -> None:
    datasets = study(StudySpec(patient_id="ST-1", series=(("CT", 2),), frames=3, rle=True))
    parts = [io.BytesIO(to_bytes(ds)) for ds in datasets]
    content_type, body = encode(parts)
    resp = imaging_client.post("/dicomweb/studies", content=b"".join(body),
                               headers={"Content-Type": content_type})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert orthanc.url not in resp.text  # the PACS address is replaced with ours
    assert "http://testserver/dicomweb/studies/" in resp.text
    uid = datasets[0].StudyInstanceUID
    found = imaging_client.get(
        "/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}
    ).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["numberOfInstances"] == 2


def test_stow_rs_with_a_patient_rewrites_the_files(imaging_client, orthanc) -> None:
    known = imaging_client.post("/fhir/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "X9"}]
    }).json()  # fmt: skip
    datasets = study(StudySpec(patient_id="WRONG", series=(("MR", 2),)))
    content_type, body = encode([io.BytesIO(to_bytes(ds)) for ds in datasets])
    resp = imaging_client.post(
        f"/dicomweb/studies?patient=Patient/{known['id']}",
        content=b"".join(body),
        headers={"Content-Type": content_type},
    )
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["00081199"]["Value"]) == 2
    assert _pacs_patient_id(orthanc, datasets[0].StudyInstanceUID) == "X9"
    studies = imaging_client.get("/fhir/ImagingStudy", params={"patient": known["id"]}).json()
    assert studies["total"] == 1


def test_stow_rs_rejects_other_bodies(imaging_client) -> None:
    resp = imaging_client.post(
        "/dicomweb/studies", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 415
    cut = imaging_client.post(
        "/dicomweb/studies?patient=Patient/x",
        content=b"--b\r\nxx",
        headers={"Content-Type": "multipart/related; boundary=b"},
    )
    assert cut.status_code in (400, 404)
