"""Mapped study Bundles applied through the one write path (SQLite and PostgreSQL)."""

from __future__ import annotations

from dicomweb_bridge.samples import StudySpec, study
from fhir_server.api.bundles import apply_transaction
from mappers.dicom import Options, from_dataset, study_bundle


def test_study_is_searchable_and_the_patient_is_matched(app, client) -> None:  # type: ignore[no-untyped-def]
    ctx = app.state.context
    known = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": "urn:hosp:mrn", "value": "77"}]},
    )
    assert known.status_code == 201
    spec = StudySpec(patient_id="77", issuer="HOSP", accession="A1")
    instances = [from_dataset(ds) for ds in study(spec)]
    options = Options(issuers={"HOSP": "urn:hosp:mrn"}, endpoint_address="http://t/dicomweb")
    apply_transaction(ctx, study_bundle(instances, options))
    apply_transaction(ctx, study_bundle(instances, options))
    found = client.get("/fhir/ImagingStudy", params={"patient": f"Patient/{known.json()['id']}"})
    bundle = found.json()
    assert bundle["total"] == 1
    res = bundle["entry"][0]["resource"]
    assert res["numberOfInstances"] == 3
    uid = instances[0]["0020000D"]["Value"][0]
    by_uid = client.get("/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"})
    assert by_uid.json()["total"] == 1
    assert client.get("/fhir/Patient").json()["total"] == 1
    assert client.get("/fhir/Endpoint").json()["total"] == 1
    endpoint = client.get(f"/fhir/{res['endpoint'][0]['reference']}").json()
    assert endpoint["address"] == "http://t/dicomweb"
