"""DICOM -> ImagingStudy / Patient, table-tested on pydicom's own files and generated studies."""

from __future__ import annotations

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from pydicom.data import get_testdata_file

from dicomweb_bridge.samples import StudySpec, study
from mappers.dicom import MappingError, Options, from_dataset, identity, study_bundle
from mappers.dicom.bodypart import body_site
from mappers.dicom.study import DCM, imaging_study
from mappers.dicom.values import date_time, gender, names


def _json(spec: StudySpec) -> list[dict]:
    return [from_dataset(ds) for ds in study(spec)]


def _resource(bundle: dict, res_type: str) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == res_type)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "JPEG2000.dcm"])
def test_pydicom_files_map_to_valid_resources(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
    bundle = study_bundle([from_dataset(ds)], Options(endpoint_address="http://h/dicomweb"))
    Bundle.model_validate(bundle)
    res = _resource(bundle, "ImagingStudy")
    ImagingStudy.model_validate(res | {"subject": {"reference": "Patient/x"}})
    assert res["identifier"][0] == {
        "system": "urn:dicom:uid", "value": f"urn:oid:{ds.StudyInstanceUID}"}  # fmt: skip
    assert res["series"][0]["instance"][0]["sopClass"]["code"] == f"urn:oid:{ds.SOPClassUID}"
    assert res["modality"][0] == {"system": DCM, "code": ds.Modality}


def test_ct_small_dates_use_its_timezone_offset() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    res = imaging_study([from_dataset(ds)], "Patient/p", Options())
    assert res["started"] == "2004-01-19T07:27:30-05:00"
    assert res["series"][0]["started"] == "1997-04-30T11:27:49-05:00"


def test_counts_series_modalities_and_body_site() -> None:
    instances = _json(StudySpec(series=(("CT", 3), ("MR", 2), ("CT", 1)), accession="ACC9"))
    res = imaging_study(instances, "Patient/p", Options(service_request="ServiceRequest/sr1"))
    assert res["numberOfSeries"] == 3 and res["numberOfInstances"] == 6
    assert [s["numberOfInstances"] for s in res["series"]] == [3, 2, 1]
    assert [s["number"] for s in res["series"]] == [1, 2, 3]
    assert [m["code"] for m in res["modality"]] == ["CT", "MR"]
    assert [i["number"] for i in res["series"][0]["instance"]] == [1, 2, 3]
    assert res["series"][0]["bodySite"] == {
        "system": "http://snomed.info/sct", "code": "43799004", "display": "Chest"}  # fmt: skip
    acsn = res["identifier"][1]
    assert acsn["value"] == "ACC9" and acsn["type"]["coding"][0]["code"] == "ACSN"
    assert res["basedOn"] == [{"reference": "ServiceRequest/sr1"}]
    assert res["referrer"] == {"display": "Dr Gregory House"}
    assert res["started"] == "2024-03-05T10:15:00+00:00"
    ImagingStudy.model_validate(res)


def test_local_study_time_takes_the_configured_zone() -> None:
    instances = _json(StudySpec(study_date="20240705", study_time="0930"))
    res = imaging_study(instances, "Patient/p", Options(time_zone="Europe/Paris"))
    assert res["started"] == "2024-07-05T09:30:00+02:00"


@pytest.mark.parametrize(
    ("da", "tm", "offset", "expected"),
    [
        ("20240102", "", "", "2024-01-02"),
        ("20240102", "23", "", "2024-01-02T23:00:00+00:00"),
        ("20240102", "235959.123", "-0330", "2024-01-02T23:59:59.123-03:30"),
        ("20240102", "12:30:00", "", "2024-01-02T12:30:00+00:00"),
        ("20241302", "1200", "", None),
        ("", "1200", "", None),
        ("20240102", "99", "", "2024-01-02"),
    ],
)
def test_date_time(da: str, tm: str, offset: str, expected: str | None) -> None:
    assert date_time(da, tm, offset) == expected


@pytest.mark.parametrize(
    ("term", "code"),
    [("HEAD", "69536005"), ("abdomen", "818981001"), ("LSPINE", "122496007"), ("KNEE", "72696002")],
)
def test_body_parts_map_to_snomed(term: str, code: str) -> None:
    site = body_site(term)
    assert site is not None and site["code"] == code


def test_unknown_body_part_keeps_its_text() -> None:
    assert body_site("LEFT PINKY") == {"display": "LEFT PINKY"}
    assert body_site("  ") is None


def test_patient_name_groups_sex_and_issuer() -> None:
    instances = _json(
        StudySpec(patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう", sex="M", issuer="1.2.3.4")
    )
    bundle = study_bundle(instances, Options())
    patient = _resource(bundle, "Patient")
    Patient.model_validate(patient)
    assert patient["identifier"] == [{"system": "urn:oid:1.2.3.4", "value": "P-001"}]
    assert patient["gender"] == "male" and patient["birthDate"] == "1970-01-01"
    assert [n.get("family") for n in patient["name"]] == ["Yamada", "山田", "やまだ"]
    assert [n["extension"][0]["valueCode"] for n in patient["name"][1:]] == ["IDE", "SYL"]
    entry = bundle["entry"][0]
    assert entry["request"]["ifNoneExist"] == "identifier=urn:oid:1.2.3.4|P-001"


def test_latin1_names_and_configured_issuer_table() -> None:
    instances = _json(StudySpec(patient_name="Müller^Jürgen^K^Prof^III", charset="ISO_IR 100",
                                issuer="HOSP"))  # fmt: skip
    patient = _resource(study_bundle(instances, Options(issuers={"HOSP": "urn:hosp:mrn"})),
                        "Patient")  # fmt: skip
    assert patient["identifier"][0]["system"] == "urn:hosp:mrn"
    assert patient["name"][0] == {"family": "Müller", "given": ["Jürgen", "K"], "prefix": ["Prof"],
                                  "suffix": ["III"], "use": "official"}  # fmt: skip


@pytest.mark.parametrize(
    ("sex", "expected"),
    [
        ("M", "male"),
        ("F", "female"),
        ("O", "other"),
        ("", "unknown"),
        ("U", "unknown"),
        ("X", "unknown"),
        ("f", "female"),
    ],  # fmt: skip
)
def test_sex(sex: str, expected: str) -> None:
    assert gender(sex) == expected


def test_missing_patient_id_gives_the_study_its_own_patient() -> None:
    instances = _json(StudySpec(patient_id=""))
    system, value = identity(instances[0], {})
    assert system == "urn:interop:dicom:study-patient"
    assert value == instances[0]["0020000D"]["Value"][0]
    bundle = study_bundle(instances, Options())
    assert _resource(bundle, "Patient")["identifier"] == [{"system": system, "value": value}]


def test_missing_study_uid_is_a_mapping_error() -> None:
    data = _json(StudySpec())[0]
    del data["0020000D"]
    with pytest.raises(MappingError, match="StudyInstanceUID"):
        study_bundle([data], Options())
    with pytest.raises(MappingError):
        study_bundle([], Options())


def test_same_study_maps_to_the_same_bundle() -> None:
    instances = _json(StudySpec())
    assert study_bundle(instances, Options()) == study_bundle(list(reversed(instances)), Options())


def test_multiframe_and_rle_instances_are_counted_like_others() -> None:
    instances = _json(StudySpec(series=(("CT", 2),), frames=4, rle=True))
    res = imaging_study(instances, "Patient/p", Options())
    assert res["numberOfInstances"] == 2


def test_names_without_groups() -> None:
    assert names({}) == []
    assert names({"Alphabetic": "^^^^"}) == []
