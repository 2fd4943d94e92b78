"""Attack class 1: the DICOMweb proxy as a way around the access policy.

A patient app confined to A, with A's and B's studies in a real Orthanc behind the proxy,
tries to reach B's images or the PACS's own admin API: by path traversal in every spelling
(raw, percent-encoded, double-encoded, backslashes, empty segments), by malformed UIDs and
query strings, by naming B's study through every DICOMweb resource kind, and by uploading.
The rule under test: the proxy parses each request into the DICOMweb grammar, decides access
on the parsed study, and sends nothing upstream for any other shape (a 400).
"""

from __future__ import annotations

import io

import orjson
import pytest
from dicomweb_support import (
    CALLBACK_TOKEN,
    Live,
    Patient,
    dicomweb_live,
    dicomweb_orthanc,
    two_patients,
)

from dicomweb_bridge.multipart import encode
from dicomweb_bridge.request import DicomwebRequest, parse
from dicomweb_bridge.samples import StudySpec, study, to_bytes
from fhir_server.errors import FhirError

__all__ = ["dicomweb_live", "dicomweb_orthanc", "two_patients"]  # fixtures used here

CONFINED_READ = "patient/ImagingStudy.rs"
CONFINED_WRITE = "patient/ImagingStudy.cruds"
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

# {A}/{B}: the two studies; {SA}/{IA}: A's series and instance; {SB}/{IB}: B's.
TRAVERSALS = [
    "studies/{A}/../{B}/metadata",
    "studies/{A}/%2e%2e/{B}/metadata",
    "studies/{A}/%2E%2E/%2E%2E/%2E%2E/patients",
    "studies/{A}%2f..%2f{B}/metadata",
    "studies/{A}%2F..%2F{B}/metadata",
    "studies/{A}/..%2f..%2f..%2fpatients",
    "studies/{A}/../../../patients",
    "studies/{A}/../../../tools/find",
    "studies/{A}/series/../../{B}/metadata",
    "studies/{A}/series/{SA}/instances/{IA}/frames/1/../../../../../../{B}/metadata",
    "studies/{A}/./metadata",
    "studies/{A}/metadata/..",
    "studies/{A}//metadata",
    "/studies/{A}/metadata",
    "studies/{A}/",
    "studies/{A}\\..\\{B}/metadata",
    "studies/{A}%5c..%5c{B}/metadata",
    "studies/{A}/%252e%252e/{B}/metadata",
    "studies/%31{A}/metadata",
    "%2fpatients",
    "studies/{A}%00/metadata",
    "studies/1.2." + "3" * 70,
    "studies/1.2.abc/metadata",
    "studies/{A}x/metadata",
    "studies/1.02.3/metadata",
    "studies/.1.2/metadata",
    "studies/{A}/patients",
    "patients",
    "system",
    "tools/lookup",
    "instances/{IA}",
    "studies/{A}/series/{SA}/instances/{IA}/frames/0",
    "studies/{A}/series/{SA}/instances/{IA}/frames/1,,2",
    "studies/{A}/series/{SA}/instances/{IA}/frames/-1",
    "studies/{A}/series/{SA}/instances/{IA}/bulk/../../../../../patients",
    "studies/{A}/metadata?x=../../../patients",
    "studies?limit=99999999999999999999",
    "studies?%2e%2e=1",
    "studies/{A}/series/{SA}/instances/{IA}/rendered?quality=1%00",
]


def fill(template: str, a: Patient, b: Patient) -> str:
    names = {"{A}": a.study, "{B}": b.study, "{SA}": a.series, "{IA}": a.instance,
             "{SB}": b.series, "{IB}": b.instance}  # fmt: skip
    for name, value in names.items():
        template = template.replace(name, value)
    return template


def admin_data(live: Live) -> list[bytes]:
    """What the PACS's admin API would have leaked: its patient ids, its name."""
    with live.orthanc.client() as pacs:
        ids = pacs.get("/patients").json()
    return [i.encode() for i in ids] + [b"interop-test", b"MainDicomTags"]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_confined_token_cannot_traverse_out_of_its_study(
    dicomweb_live: Live, two_patients: dict[str, Patient], template: str
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    headers = dicomweb_live.token(CONFINED_READ, a.id)
    leaks = admin_data(dicomweb_live) + [b.study.encode(), b.patient_id.encode()]
    target = "/dicomweb/" + fill(template, a, b)
    for method in ("GET", "HEAD", "DELETE"):
        (status, resp_headers, body), upstream = dicomweb_live.orthanc_requests_during(
            lambda m=method: dicomweb_live.raw(m, target, headers)  # type: ignore[misc]
        )
        assert status == 400, (method, target, status, body[:300])
        assert upstream == [], f"{method} {target} reached Orthanc: {upstream}"
        if method != "HEAD":
            assert orjson.loads(body)["resourceType"] == "OperationOutcome"
            assert resp_headers["content-type"].startswith("application/fhir+json")
            assert not any(leak in body for leak in leaks), body[:300]


def test_unconfined_token_cannot_traverse_either(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    """Not only a confined token: nobody reaches the PACS outside its DICOMweb root."""
    a, b = two_patients["a"], two_patients["b"]
    headers = dicomweb_live.token("system/ImagingStudy.cruds")
    for template in ("studies/{A}/../../../patients", "studies/{A}/%2e%2e/%2e%2e/%2e%2e/system",
                     "studies/{A}%2f..%2f..%2f..%2fpatients"):  # fmt: skip
        target = "/dicomweb/" + fill(template, a, b)
        (status, _, body), upstream = dicomweb_live.orthanc_requests_during(
            lambda t=target: dicomweb_live.raw("GET", t, headers)  # type: ignore[misc]
        )
        assert status == 400 and upstream == [], (target, status, upstream)
        assert not any(leak in body for leak in admin_data(dicomweb_live))


# Every DICOMweb resource kind naming B's study (or B's series/instance under A's study).
OTHER_STUDY = [
    ("GET", "studies/{B}", "multipart/related; type=application/dicom"),
    ("GET", "studies/{B}/metadata", "application/dicom+json"),
    ("GET", "studies/{B}/rendered", "image/png"),
    ("GET", "studies/{B}/thumbnail", "image/png"),
    ("GET", "studies/{B}/bulkdata", FRAMES),
    ("GET", "studies/{B}/series", "application/dicom+json"),
    ("GET", "studies/{B}/instances", "application/dicom+json"),
    ("GET", "studies/{B}/series/{SB}", "multipart/related; type=application/dicom"),
    ("GET", "studies/{B}/series/{SB}/metadata", "application/dicom+json"),
    ("GET", "studies/{B}/series/{SB}/rendered", "image/png"),
    ("GET", "studies/{B}/series/{SB}/instances", "application/dicom+json"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}", "multipart/related; type=application/dicom"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/metadata", "application/dicom+json"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/frames/1", FRAMES),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/frames/1,2/rendered", "image/png"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/rendered", "image/png"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/thumbnail", "image/png"),
    ("GET", "studies/{B}/series/{SB}/instances/{IB}/bulk/7fe00010", FRAMES),
    ("HEAD", "studies/{B}/metadata", "application/dicom+json"),
    ("GET", "studies/{A}/series/{SB}/metadata", "application/dicom+json"),
    ("GET", "studies/{A}/series/{SB}/instances/{IB}/frames/1", FRAMES),
    ("GET", "studies/{A}/series/{SA}/instances/{IB}/rendered", "image/png"),
    ("DELETE", "studies/{B}", ""),
    ("DELETE", "studies/{B}/series/{SB}/instances/{IB}", ""),
]


@pytest.mark.parametrize(("method", "template", "accept"), OTHER_STUDY)
def test_confined_token_cannot_reach_another_patients_study(
    dicomweb_live: Live, two_patients: dict[str, Patient], method: str, template: str,
    accept: str,
) -> None:  # fmt: skip
    a, b = two_patients["a"], two_patients["b"]
    headers = {**dicomweb_live.token(CONFINED_WRITE, a.id), "Accept": accept}
    nobody = Patient("x", "x", "1.2.3.999", "1.2.3.999.1", "1.2.3.999.1.1")
    with dicomweb_live.http() as http:
        resp = http.request(method, "/dicomweb/" + fill(template, a, b), headers=headers)
        absent = http.request(method, "/dicomweb/" + fill(template, a, nobody), headers=headers)
    assert resp.status_code in (403, 404), (template, resp.status_code, resp.text[:300])
    assert resp.status_code == absent.status_code  # B's study looks like no study at all
    assert b.patient_id not in resp.text and "Doe^Jane" not in resp.text
    with dicomweb_live.orthanc.client() as pacs:  # B's study is still whole
        assert pacs.get(f"/dicom-web/studies/{b.study}/metadata").status_code == 200


# The same shapes for A's own study: the parser keeps every valid DICOMweb form working.
OWN_STUDY = [
    ("studies/{A}/metadata", "application/dicom+json"),
    ("studies/{A}/series", "application/dicom+json"),
    ("studies/{A}/instances", "application/dicom+json"),
    ("studies/{A}/series/{SA}/metadata", "application/dicom+json"),
    ("studies/{A}/series/{SA}/instances", "application/dicom+json"),
    ("studies/{A}/series/{SA}/instances/{IA}", "multipart/related; type=application/dicom"),
    ("studies/{A}/series/{SA}/instances/{IA}/frames/1,2", FRAMES),
    ("studies/{A}/series/{SA}/instances/{IA}/frames/2/rendered", "image/png"),
    ("studies/{A}/series/{SA}/instances/{IA}/rendered?quality=80", "image/jpeg"),
    ("studies/{A}/series/{SA}/instances/{IA}/bulk/7fe00010", FRAMES),
    ("studies?PatientID={PA}&includefield=StudyDescription,00081030&limit=10", "*/*"),
]


@pytest.mark.parametrize(("template", "accept"), OWN_STUDY)
def test_confined_token_still_reads_its_own_study(
    dicomweb_live: Live, two_patients: dict[str, Patient], template: str, accept: str
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    headers = {**dicomweb_live.token(CONFINED_READ, a.id), "Accept": accept}
    path = fill(template, a, b).replace("{PA}", a.patient_id)
    with dicomweb_live.http() as http:
        resp, upstream = dicomweb_live.orthanc_requests_during(
            lambda: http.get("/dicomweb/" + path, headers=headers)
        )
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
    assert b.study.encode() not in resp.content
    assert ("GET", "/dicom-web/" + path.split("?")[0]) in upstream  # under the root, as parsed
    assert all(p.startswith("/dicom-web/") and ".." not in p for _, p in upstream), upstream


@pytest.mark.parametrize(
    "query",
    [
        "studies?StudyInstanceUID={B}",
        "series?StudyInstanceUID={B}",
        "instances?SOPInstanceUID={IB}",
        "studies?PatientID={PB}",
        "studies/{A}/series?SeriesInstanceUID={SB}",
    ],  # fmt: skip
)
def test_confined_search_for_another_patients_study_finds_nothing(
    dicomweb_live: Live, two_patients: dict[str, Patient], query: str
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    headers = dicomweb_live.token(CONFINED_READ, a.id)
    with dicomweb_live.http() as http:
        resp = http.get("/dicomweb/" + fill(query, a, b).replace("{PB}", b.patient_id),
                        headers=headers)  # fmt: skip
    assert resp.status_code in (200, 204), resp.text[:300]
    assert b.study not in resp.text and b.patient_id not in resp.text


def _stow_body(spec: StudySpec, study_uid: str | None = None) -> tuple[str, bytes]:
    datasets = study(spec)
    for ds in datasets:
        if study_uid:
            ds.StudyInstanceUID = study_uid
    content_type, parts = encode([io.BytesIO(to_bytes(ds)) for ds in datasets])
    return content_type, b"".join(parts)


def _files(spec: StudySpec, study_uid: str | None = None) -> list[tuple[str, tuple]]:  # type: ignore[type-arg]
    datasets = study(spec)
    for ds in datasets:
        if study_uid:
            ds.StudyInstanceUID = study_uid
    return [("file", (f"{i}.dcm", to_bytes(ds), "application/dicom"))
            for i, ds in enumerate(datasets)]  # fmt: skip


def test_confined_upload_and_stow_store_for_the_tokens_patient(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    """Was a plain-text 500 ('Decision' object has no attribute 'patient')."""
    a = two_patients["a"]
    headers = dicomweb_live.token(CONFINED_WRITE, a.id)
    with dicomweb_live.http() as http:
        up = http.post("/imaging/upload", files=_files(StudySpec(patient_id="SOMEONE-ELSE")),
                       headers=headers)  # fmt: skip
        assert up.status_code == 201, up.text
        assert {s["subject"]["reference"] for s in up.json()["imagingStudies"]} == {
            f"Patient/{a.id}"
        }
        content_type, body = _stow_body(StudySpec(patient_id="SOMEONE-ELSE"))
        stow = http.post("/dicomweb/studies", content=body,
                         headers={**headers, "Content-Type": content_type})  # fmt: skip
        assert stow.status_code == 200, stow.text
        assert stow.headers["content-type"].startswith("application/dicom+json")
        own = http.get("/dicomweb/studies", headers=headers).json()
        assert len(own) == 3  # A's first study, the upload, the STOW
        content_type, body = _stow_body(StudySpec(series=(("MR", 1),)), a.study)
        into_own = http.post(f"/dicomweb/studies/{a.study}", content=body,
                             headers={**headers, "Content-Type": content_type})  # fmt: skip
        assert into_own.status_code == 200, into_own.text
        assert len(http.get(f"/dicomweb/studies/{a.study}/instances", headers=headers).json()) == 2


def test_confined_upload_for_another_patient_is_refused(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    headers = dicomweb_live.token(CONFINED_WRITE, a.id)
    content_type, body = _stow_body(StudySpec())
    with dicomweb_live.http() as http:
        up = http.post("/imaging/upload", files=_files(StudySpec()),
                       data={"patient": f"Patient/{b.id}"}, headers=headers)  # fmt: skip
        stow = http.post(f"/dicomweb/studies?patient=Patient/{b.id}", content=body,
                         headers={**headers, "Content-Type": content_type})  # fmt: skip
        for resp in (up, stow):
            assert resp.status_code == 403, resp.text
            assert resp.json()["resourceType"] == "OperationOutcome"
    with dicomweb_live.orthanc.client() as pacs:
        assert len(pacs.get("/studies").json()) == 2  # nothing stored


def test_confined_upload_into_another_patients_study_uid_is_refused(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    headers = dicomweb_live.token(CONFINED_WRITE, a.id)
    content_type, body = _stow_body(StudySpec(), b.study)
    with dicomweb_live.http() as http:
        up = http.post("/imaging/upload", files=_files(StudySpec(), b.study), headers=headers)
        stow = http.post("/dicomweb/studies", content=body,
                         headers={**headers, "Content-Type": content_type})  # fmt: skip
        named = http.post(f"/dicomweb/studies/{b.study}", content=body,
                          headers={**headers, "Content-Type": content_type})  # fmt: skip
        mismatch = http.post(f"/dicomweb/studies/{a.study}", content=body,
                             headers={**headers, "Content-Type": content_type})  # fmt: skip
        spelled = http.post("/imaging/upload", files=_files(StudySpec(), f"{b.study}.00"),
                            headers=headers)  # fmt: skip
    for resp in (up, stow, named):
        assert resp.status_code == 403, resp.text
    assert mismatch.status_code in (400, 403), mismatch.text
    assert spelled.status_code == 400, spelled.text  # only exact, well-formed UIDs compared
    with dicomweb_live.orthanc.client() as pacs:
        assert len(pacs.get("/studies").json()) == 2
        assert len(pacs.get(f"/dicom-web/studies/{b.study}/instances").json()) == 1


def test_read_only_or_unscoped_token_cannot_upload(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    a = two_patients["a"]
    content_type, body = _stow_body(StudySpec())
    with dicomweb_live.http() as http:
        for headers, status in ((dicomweb_live.token(CONFINED_READ, a.id), 403),
                                (dicomweb_live.token("patient/Observation.cruds", a.id), 403),
                                ({}, 401)):  # fmt: skip
            up = http.post("/imaging/upload", files=_files(StudySpec()), headers=headers)
            stow = http.post("/dicomweb/studies", content=body,
                             headers={**headers, "Content-Type": content_type})  # fmt: skip
            assert (up.status_code, stow.status_code) == (status, status), (up.text, stow.text)
    with dicomweb_live.orthanc.client() as pacs:
        assert len(pacs.get("/studies").json()) == 2


def test_confined_token_cannot_delete_even_its_own_study(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    a = two_patients["a"]
    headers = dicomweb_live.token(CONFINED_WRITE, a.id)
    with dicomweb_live.http() as http:
        assert http.delete(f"/dicomweb/studies/{a.study}", headers=headers).status_code == 403
    with dicomweb_live.orthanc.client() as pacs:
        assert pacs.get(f"/dicom-web/studies/{a.study}/metadata").status_code == 200


def test_orthanc_deletion_callback_needs_its_own_token(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    """Only Orthanc's shared callback token opens it: no SMART token, even system/*."""
    body = orjson.dumps({"ResourceType": "Study", "ID": "x"})
    with dicomweb_live.http() as http:
        for headers in ({}, dicomweb_live.token("system/*.cruds"),
                        {"Authorization": "Bearer callback-tokeN"},
                        {"Authorization": "Basic Y2FsbGJhY2stdG9rZW4="}):  # fmt: skip
            resp = http.post("/imaging/orthanc/deleted", content=body, headers=headers)
            assert resp.status_code == 401, resp.text
            assert resp.json()["resourceType"] == "OperationOutcome"
        right = http.post("/imaging/orthanc/deleted", content=body,
                          headers={"Authorization": f"Bearer {CALLBACK_TOKEN}"})  # fmt: skip
        assert right.status_code == 204


def test_callers_host_and_hop_by_hop_headers_never_reach_the_pacs(
    dicomweb_live: Live, two_patients: dict[str, Patient]
) -> None:
    a = two_patients["a"]
    sent = {**dicomweb_live.token(CONFINED_READ, a.id), "Host": "evil.example:1",
            "X-Forwarded-Host": "evil.example", "Connection": "close, X-Evil",
            "X-Evil": "evil", "Proxy-Authorization": "Basic ZXZpbDpldmls",
            "Cookie": "session=evil", "Accept": "application/dicom+json"}  # fmt: skip
    (status, _, body), received = dicomweb_live.orthanc_headers_during(
        lambda: dicomweb_live.raw("GET", f"/dicomweb/studies/{a.study}/metadata", sent)
    )
    assert status == 200 and b"evil" not in body
    names = {name.lower() for name, _ in received}
    assert "accept" in names  # the request did reach Orthanc, with what it needs
    assert not names & {"x-forwarded-host", "x-evil", "proxy-authorization", "cookie"}, received
    assert not any("evil" in value for _, value in received), received
    bearer = sent["Authorization"]
    assert all(value != bearer for _, value in received)  # the PACS sees its own credentials


# -- the parser, table-driven ---------------------------------------------------------------

UID_A = "1.2.840.113619.2.55.3.604688119"
UID_S = "1.2.3.4.5"
UID_I = "1.2.3.4.5.6"
VALID = [
    ("GET", "studies", {"search": "studies"}),
    ("GET", "series", {"search": "series"}),
    ("GET", "instances", {"search": "instances"}),
    ("GET", f"studies/{UID_A}", {"study": UID_A}),
    ("GET", f"studies/{UID_A}/metadata", {"study": UID_A, "view": "metadata"}),
    ("GET", f"studies/{UID_A}/rendered", {"study": UID_A, "view": "rendered"}),
    ("GET", f"studies/{UID_A}/thumbnail", {"study": UID_A, "view": "thumbnail"}),
    ("GET", f"studies/{UID_A}/bulkdata", {"study": UID_A, "view": "bulkdata"}),
    ("GET", f"studies/{UID_A}/series", {"study": UID_A, "search": "series"}),
    ("GET", f"studies/{UID_A}/instances", {"study": UID_A, "search": "instances"}),
    ("GET", f"studies/{UID_A}/series/{UID_S}", {"study": UID_A, "series": UID_S}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/metadata",
     {"study": UID_A, "series": UID_S, "view": "metadata"}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances",
     {"study": UID_A, "series": UID_S, "search": "instances"}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}",
     {"study": UID_A, "series": UID_S, "instance": UID_I}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}/frames/1,3,20",
     {"instance": UID_I, "view": "frames", "frames": (1, 3, 20)}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}/frames/2/thumbnail",
     {"view": "frames", "frames": (2,), "frame_view": "thumbnail"}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}/bulk/7FE00010",
     {"view": "bulk", "bulk": ("7fe00010",)}),
    ("GET", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}/bulk/00540016/0/00181072",
     {"view": "bulk", "bulk": ("00540016", "0", "00181072")}),
    ("GET", "studies/0.0.0", {"study": "0.0.0"}),
    ("GET", "studies/" + "1." * 31 + "1", {"study": "1." * 31 + "1"}),  # 63 characters
    ("GET", "studies/1." + "2" * 62, {"study": "1." + "2" * 62}),  # exactly 64
    ("POST", "studies", {"search": "studies"}),
    ("POST", f"studies/{UID_A}", {"study": UID_A}),
    ("DELETE", f"studies/{UID_A}", {"study": UID_A}),
    ("DELETE", f"studies/{UID_A}/series/{UID_S}/instances/{UID_I}", {"instance": UID_I}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "expected"), VALID)
def test_parser_accepts_every_dicomweb_form(method: str, path: str, expected: dict) -> None:  # type: ignore[type-arg]
    parsed = parse(method, path)
    for key, value in expected.items():
        assert getattr(parsed, key) == value, (path, key)
    assert parsed.path == path.replace("7FE00010", "7fe00010")  # rebuilt, not copied


INVALID = [
    "", "/", "studies/", "/studies", "studies//series", "studies/..", "studies/.",
    f"studies/{UID_A}/..", f"studies/{UID_A}/../{UID_A}", f"studies/{UID_A}/%2e%2e",
    f"studies/{UID_A}%2f..", f"studies/{UID_A}\\..", "studies/1.2.3a", "studies/01.2",
    "studies/1..2", "studies/1.2.", "studies/.1.2", "studies/1." + "2" * 63, "studies/-1",
    "studies/1,2", "patients", "studies/1.2/patients", "studies/1.2/series/1.3/frames/1",
    "studies/1.2/metadata/extra", "studies/1.2/series/1.3/instances/1.4/frames",
    "studies/1.2/series/1.3/instances/1.4/frames/0",
    "studies/1.2/series/1.3/instances/1.4/frames/01",
    "studies/1.2/series/1.3/instances/1.4/frames/1,",
    "studies/1.2/series/1.3/instances/1.4/frames/1/metadata",
    "studies/1.2/series/1.3/instances/1.4/frames/9999999999",
    "studies/1.2/series/1.3/instances/1.4/bulk",
    "studies/1.2/series/1.3/instances/1.4/bulk/7fe0001",
    "studies/1.2/series/1.3/instances/1.4/bulk/7fe00010/x",
    "studies/1.2/bulk/7fe00010", "series/1.2", "instances/1.2", "studies/1.2/instances/1.3",
    "STUDIES/1.2", "studies/1.2/Metadata", "studies/\u0661.2",
]  # fmt: skip


@pytest.mark.parametrize("path", INVALID)
def test_parser_refuses_every_other_shape(path: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse("GET", path)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("method", "path", "query", "ok"),
    [
        ("GET", "studies", [("PatientID", "12*"), ("limit", "10"), ("offset", "0")], True),
        ("GET", "studies", [("00100010", "Doe^J"), ("fuzzymatching", "true")], True),
        ("GET", "studies", [("includefield", "00081030,StudyDescription"), ("StudyDate",
                                                                           "2020-2021")], True),
        ("GET", "series", [("includefield", "all"), ("Modality", "CT")], True),
        ("GET", "studies", [("ReferencedStudySequence.StudyInstanceUID", "1.2")], True),
        ("GET", f"studies/{UID_A}/metadata", [("charset", "utf-8")], True),
        ("GET", f"studies/{UID_A}/rendered", [("quality", "80"), ("viewport", "64,64")], True),
        ("POST", "studies", [("patient", "Patient/x")], True),
        ("GET", "studies", [("limit", "-1")], False),
        ("GET", "studies", [("limit", "99999999999999999999")], False),
        ("GET", "studies", [("fuzzymatching", "maybe")], False),
        ("GET", "studies", [("NotAKeyword", "x")], False),
        ("GET", "studies", [("includefield", "00081030,../x")], False),
        ("GET", "studies", [("PatientID", "a\x00b")], False),
        ("GET", "studies", [("PatientID", "x" * 2000)], False),
        ("GET", "studies", [("PatientID", "x")] * 101, False),
        ("GET", f"studies/{UID_A}/metadata", [("quality", "80")], False),
        ("GET", f"studies/{UID_A}/metadata", [("PatientID", "x")], False),
        ("GET", f"studies/{UID_A}", [("url", "http://127.0.0.1/")], False),
        ("POST", "studies", [("limit", "1")], False),
        ("DELETE", f"studies/{UID_A}", [("force", "1")], False),
        ("POST", f"studies/{UID_A}/metadata", [], False),
        ("DELETE", "studies", [], False),
        ("DELETE", f"studies/{UID_A}/metadata", [], False),
    ],
)  # fmt: skip
def test_parser_passes_only_dicomweb_query_parameters(
    method: str, path: str, query: list[tuple[str, str]], ok: bool
) -> None:
    if ok:
        parsed: DicomwebRequest = parse(method, path, query)
        assert list(parsed.params) == query
        assert "patient" not in dict(parsed.upstream_params)
    else:
        with pytest.raises(FhirError) as refused:
            parse(method, path, query)
        assert refused.value.status == 400
