"""End to end in the embedded mode (no Redis): study in Orthanc -> Task -> DiagnosticReport."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from ai_support import upload_study

from ai_worker.phantom import BONE, FAT, LUNG, SOFT, make_phantom, write_series


def wait_for_jobs(client) -> None:  # type: ignore[no-untyped-def]
    runner = client.app.state.ai.runner
    assert runner is not None and runner.wait_idle(60)


def wait_for_tasks(client, study_id: str, count: int = 1) -> list[dict]:  # type: ignore[no-untyped-def]
    """Until `count` Tasks on the study have ended (the outbox trigger runs after commit)."""
    deadline = time.monotonic() + 60
    while True:
        found = client.get("/fhir/Task", params={"focus": f"ImagingStudy/{study_id}"}).json()
        tasks = [e["resource"] for e in found.get("entry", [])]
        ended = [t for t in tasks if t["status"] in ("completed", "failed", "rejected")]
        if len(ended) >= count:
            return tasks
        assert time.monotonic() < deadline, tasks
        time.sleep(0.1)


@pytest.fixture
def no_rules(ai_client):  # type: ignore[no-untyped-def]
    """No trigger rules: the test asks for analyses itself."""
    service = ai_client.app.state.ai.service
    rules, service.rules = service.rules, []
    yield
    service.rules = rules


def observations_by_code(client, report: dict) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    out = {}
    for ref in report["result"]:
        obs = client.get(f"/fhir/{ref['reference']}").json()
        out[obs["code"]["coding"][0]["code"]] = obs
    return out


@pytest.mark.parametrize("syntax", ["uncompressed", "rle", "jpeg2000", "htj2k"])
def test_rule_triggers_analysis_and_report_is_searchable(ai_client, orthanc, ojph, syntax) -> None:  # type: ignore[no-untyped-def]
    phantom = make_phantom(slices=6, size=40)
    patient, study = upload_study(ai_client, orthanc, write_series(phantom, syntax))
    tasks = wait_for_tasks(ai_client, study["id"])  # triggered by the rule, from the outbox
    assert len(tasks) == 1
    task = tasks[0]
    assert task["status"] == "completed", task.get("statusReason")
    assert task["for"] == {"reference": f"Patient/{patient['id']}"}
    assert task["code"]["coding"][0]["code"] == "ct-classical"
    assert task["owner"]["reference"].startswith("Device/")
    assert task["businessStatus"]["text"] == "done"

    # progress was visible: the Task's history walks through the steps
    history = ai_client.get(f"/fhir/Task/{task['id']}/_history", params={"_count": 50}).json()
    steps = [e["resource"]["businessStatus"]["text"] for e in reversed(history["entry"])]
    assert steps == ["queued", "fetching", "decoding", "inferring", "writing", "done"]

    reports = ai_client.get(
        "/fhir/DiagnosticReport", params={"patient": f"Patient/{patient['id']}"}
    ).json()
    assert reports["total"] == 1
    report = reports["entry"][0]["resource"]
    assert report["status"] == "preliminary"
    assert report["code"]["coding"][0]["code"] == "18748-4"
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study['id']}"}]
    assert report["presentedForm"][0]["contentType"] == "image/png"
    assert report["conclusionCode"][0]["coding"][0]["code"] == "51185008"
    assert task["output"][0]["valueReference"]["reference"] == f"DiagnosticReport/{report['id']}"

    obs = observations_by_code(ai_client, report)
    for code, material in (
        ("fat-volume", FAT),
        ("soft-tissue-volume", SOFT),
        ("bone-volume", BONE),
        ("air-volume", LUNG),
    ):
        quantity = obs[code]["valueQuantity"]
        assert quantity["value"] == pytest.approx(phantom.ml(material), abs=1e-3)
        assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"] == "mL"
        assert obs[code]["derivedFrom"] == [{"reference": f"ImagingStudy/{study['id']}"}]
        assert obs[code]["device"] == task["owner"]

    device = ai_client.get(f"/fhir/{task['owner']['reference']}").json()
    assert device["deviceName"][0]["name"] == "ct-classical"
    assert "NOT A DIAGNOSTIC DEVICE" in device["note"][0]["text"]
    provenance = ai_client.get(
        "/fhir/Provenance", params={"target": f"DiagnosticReport/{report['id']}"}
    ).json()
    assert provenance["total"] == 1
    prov = provenance["entry"][0]["resource"]
    assert prov["agent"][0]["who"] == task["owner"]
    assert prov["entity"][0]["what"] == {"reference": f"ImagingStudy/{study['id']}"}


def test_analyze_by_hand_reruns_as_a_new_version(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    phantom = make_phantom(slices=4, size=32, metal=True)
    _, study = upload_study(ai_client, orthanc, write_series(phantom))
    url = f"/fhir/ImagingStudy/{study['id']}/$analyze"
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "model", "valueString": "ct-classical"}]}  # fmt: skip
    first = ai_client.post(url, json=body)
    assert first.status_code == 200, first.text
    wait_for_jobs(ai_client)
    second = ai_client.post(url, json=body)
    assert second.status_code == 200
    wait_for_jobs(ai_client)
    refs = [r.json()["parameter"][0]["valueReference"]["reference"] for r in (first, second)]
    assert refs[0] != refs[1]  # two Tasks ...
    reports = ai_client.get(
        "/fhir/DiagnosticReport",
        params={"identifier": f"urn:interop:ai:report|{study['id']}/ct-classical"},
    ).json()
    assert reports["total"] == 1  # ... one report, in its second version
    report = reports["entry"][0]["resource"]
    assert report["meta"]["versionId"] == "2"
    obs = observations_by_code(ai_client, report)
    assert obs["intensity-outlier"]["interpretation"][0]["coding"][0]["code"] == "A"


def test_same_study_and_model_never_runs_twice_at_once(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=3, size=16)))
    service = ai_client.app.state.ai.service
    submitter, service.submitter = service.submitter, None  # queue, do not run yet
    try:
        first, new_first = service.request(study["id"], "ct-classical")
        second, new_second = service.request(study["id"], "ct-classical")
        assert new_first and (second, new_second) == (first, False)
        # a Task POSTed through the API for the same analysis is rejected, naming the first
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "urn:interop:ai:model", "code": "ct-classical"}]},
            "focus": {"reference": f"ImagingStudy/{study['id']}"},
        }
        created = ai_client.post("/fhir/Task", json=task).json()
        deadline = time.monotonic() + 30
        while (again := ai_client.get(f"/fhir/Task/{created['id']}").json())["status"] == (
            "requested"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert again["status"] == "rejected"
        assert first in again["statusReason"]["text"]
    finally:
        service.submitter = submitter
    service.submitter.submit(first)
    wait_for_jobs(ai_client)
    assert ai_client.get(f"/fhir/Task/{first}").json()["status"] == "completed"


def test_bad_input_fails_the_task_without_retry(ai_client, orthanc) -> None:  # type: ignore[no-untyped-def]
    from pydicom.uid import generate_uid

    patient, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=2, size=16)))
    wait_for_tasks(ai_client, study["id"])
    study["identifier"][0]["value"] = f"urn:oid:{generate_uid()}"  # not in the PACS
    assert ai_client.put(f"/fhir/ImagingStudy/{study['id']}", json=study).status_code == 200
    tasks = wait_for_tasks(ai_client, study["id"], 2)  # the update triggers a new analysis
    assert sorted(t["status"] for t in tasks) == ["completed", "failed"]
    task = next(t for t in tasks if t["status"] == "failed")
    assert "the PACS has no series" in task["statusReason"]["text"]
    job = ai_client.app.state.ai.service.jobs.get(task["id"])
    assert job.attempts == 1 and job.status == "failed"


def test_pacs_down_is_retried_then_fails(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=2, size=16)))
    service = ai_client.app.state.ai.service
    good = service.settings
    # nothing listens there (the config is frozen: the service gets a changed copy)
    service.settings = replace(good, dicomweb_url="http://127.0.0.1:9/dicom-web")
    try:
        task_id, _ = service.request(study["id"], "ct-classical")
        import time

        deadline = time.monotonic() + 30
        while service.jobs.get(task_id).status != "failed" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        service.settings = good
    job = service.jobs.get(task_id)
    assert job.status == "failed" and job.attempts == 3  # first try + ai_max_retries (2)
    task = ai_client.get(f"/fhir/Task/{task_id}").json()
    assert task["status"] == "failed" and "gave up after 3 attempts" in task["statusReason"]["text"]


def test_interop_ai_jobs_lists_progress(
    ai_client, orthanc, database_url, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import json

    from interop.cli import main
    from interop.settings import get_settings

    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=2, size=16)))
    wait_for_tasks(ai_client, study["id"])
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert main(["ai", "jobs", "--json"]) == 0
        jobs = json.loads(capsys.readouterr().out)["jobs"]
        assert main(["ai", "jobs"]) == 0
        table = capsys.readouterr().out
        assert main(["ai", "models", "--json"]) == 0
        models = json.loads(capsys.readouterr().out)["models"]
    finally:
        get_settings.cache_clear()
    assert len(jobs) == 1
    assert jobs[0]["study"] == f"ImagingStudy/{study['id']}"
    assert (jobs[0]["status"], jobs[0]["step"], jobs[0]["model"]) == (
        "done",
        "done",
        "ct-classical",
    )
    assert jobs[0]["report"].startswith("DiagnosticReport/")
    assert jobs[0]["task"] in table and "done" in table
    assert "ct-classical" in [m["name"] for m in models]


def test_task_created_through_the_api_is_run(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    phantom = make_phantom(slices=3, size=24)
    _, study = upload_study(ai_client, orthanc, write_series(phantom))
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "urn:interop:ai:model", "code": "ct-classical"}]},
        "focus": {"reference": f"ImagingStudy/{study['id']}"},
    }
    assert ai_client.post("/fhir/Task", json=task).status_code == 201
    tasks = wait_for_tasks(ai_client, study["id"])
    assert tasks[0]["status"] == "completed", tasks[0].get("statusReason")
    bad = task | {"code": {"coding": [{"system": "urn:interop:ai:model", "code": "nope"}]}}
    created = ai_client.post("/fhir/Task", json=bad).json()
    tasks = wait_for_tasks(ai_client, study["id"], 2)
    failed = next(t for t in tasks if t["id"] == created["id"])
    assert (
        failed["status"] == "failed"
        and "no model plugin named 'nope'" in (failed["statusReason"]["text"])
    )


def test_sweeper_picks_up_a_job_a_dead_process_left(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    """Embedded mode: the process died mid-job (lease held, Task in progress); after the lease
    runs out, the sweeper of the next process runs the job to the end, once."""
    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=3, size=24)))
    service = ai_client.app.state.ai.service
    submitter, service.submitter = service.submitter, None
    try:
        task_id, _ = service.request(study["id"], "ct-classical")
    finally:
        service.submitter = submitter
    assert service.jobs.claim(task_id, "decode", "dead-process", lease=0.5)  # then it died
    assert service.recover(grace_seconds=0) == []  # the lease still holds: nobody takes it
    time.sleep(0.6)
    assert service.recover(grace_seconds=0) == [task_id]
    wait_for_jobs(ai_client)
    task = ai_client.get(f"/fhir/Task/{task_id}").json()
    assert task["status"] == "completed"
    job = service.jobs.get(task_id)
    assert job.attempts == 3 and job.worker != "dead-process"  # dead claim, decode, infer


def test_sweeper_asks_again_for_a_queued_job_nobody_took_up(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]
    """A job whose message was lost (with a worker that died holding it, or with Redis) stays
    queued: the sweeper submits it again once it has waited its grace, then only once it has
    waited as long again (a job merely waiting behind a backlog is not flooded); it runs to
    the end once."""
    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=3, size=24)))
    service = ai_client.app.state.ai.service
    submitter, service.submitter = service.submitter, None
    try:
        task_id, _ = service.request(study["id"], "ct-classical")  # its message: lost
    finally:
        service.submitter = submitter
    lost: list[str] = []

    class Lost:  # the broker losing the message
        def submit(self, task: str) -> None:
            lost.append(task)

    service.submitter = Lost()
    try:
        assert service.recover(grace_seconds=1) == []  # within its grace: it may be on its way
        time.sleep(2.0)
        assert service.recover(grace_seconds=1) == [task_id]  # asked again (lost again)
        time.sleep(1.2)
        assert service.recover(grace_seconds=1) == []  # it had waited 2 s: wait as long
    finally:
        service.submitter = submitter
    assert lost == [task_id]
    time.sleep(1.0)
    assert service.recover(grace_seconds=1) == [task_id]  # this time it arrives
    wait_for_jobs(ai_client)
    assert ai_client.get(f"/fhir/Task/{task_id}").json()["status"] == "completed"
    assert service.jobs.get(task_id).attempts == 2  # decode, infer: once each
