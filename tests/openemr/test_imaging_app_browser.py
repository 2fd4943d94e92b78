# ruff: noqa: E501 - browser scripts read best on one line
# ruff: noqa: F811 - `browser` is the fixture imported from test_e2e_browser
"""The hosted imaging app end to end, in headless Chromium: a clinician signs in to (simulated)
OpenEMR only and opens the patient's chart; OpenEMR launches /apps/imaging in its iframe through
our EHR-launch broker. The app lists the patient's studies with thumbnails from a real Orthanc
(through the secured DICOMweb proxy), opens a series in the Cornerstone3D viewer (scroll and
window/level from the keyboard), and approves the AI report the real AI worker made; the
patient-view CDS card for it is gone afterwards. The launch is confined to its patient: another
patient's studies and reports are neither listed nor readable with its token.

Screenshots go to $INTEROP_ARTIFACTS_DIR (default: artifacts/) /screenshots, which CI keeps.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from imaging_support import PASSWORD, USER, running_orthanc
from joserfc import jwt
from joserfc.jwk import ECKey
from oe_accounts import CLIENT_ID, bridge_settings
from simulator import OpenEmrSimulator
from store_support import clear_tables
from test_e2e_browser import Chromium, Served, browser, free_port  # noqa: F401 - fixture

from ai_worker.phantom import make_phantom, write_series
from interop.app import create_app
from interop.settings import Settings
from openemr_bridge.routes import build_syncer

CLINICIAN, CLINICIAN_PASSWORD = "drwho", "clinician-pass-3"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ROOT = Path(__file__).resolve().parent.parent.parent
SHOTS = Path(os.environ.get("INTEROP_ARTIFACTS_DIR", ROOT / "artifacts")) / "screenshots"


class Frame:
    """The app inside OpenEMR's iframe (another origin): scripts run in that frame's own
    JavaScript context, found over the DevTools protocol."""

    def __init__(self, browser: Chromium, context: int) -> None:
        self.browser = browser
        self.context = context

    def run(self, script: str) -> Any:
        answer = self.browser.call("Runtime.evaluate", expression=script, contextId=self.context,
                                   awaitPromise=True, returnByValue=True)  # fmt: skip
        return answer.get("result", {}).get("result", {}).get("value")

    evaluate = run

    def wait_for(self, expression: str, seconds: float = 20) -> Any:
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.run(expression)
            if value:
                return value
            time.sleep(0.1)
        shown = self.run(
            "JSON.stringify({status: document.getElementById('status').textContent, "
            "studies: [...document.querySelectorAll('.study')].map(b => b.innerText + ' ' + "
            "(b.querySelector('img') || {}).alt + (b.querySelector('img') || {}).title), reports: document.getElementById('reports').innerText})"
        )
        raise AssertionError(f"never true in the app: {expression}; the app shows {shown}")


def _frames(tree: dict[str, Any]) -> list[dict[str, Any]]:
    out = [tree["frame"]]
    for child in tree.get("childFrames") or []:
        out.extend(_frames(child))
    return out


def find_frame(browser: Chromium, prefix: str, seconds: float = 60) -> Frame:
    """The frame whose document is at `prefix` once its page has loaded, and its default
    JavaScript context (Runtime.enable announces every live context as an event)."""
    deadline = time.time() + seconds
    seen: list[str] = []
    state = ""
    while time.time() < deadline:
        tree = browser.call("Page.getFrameTree")["result"]["frameTree"]
        seen = [f["url"] for f in _frames(tree)]
        frame = next((f for f in _frames(tree) if f["url"].startswith(prefix)), None)
        if frame is not None:
            browser.call("Runtime.disable")
            browser.next_id += 1
            browser.ws.send(json.dumps({"id": browser.next_id, "method": "Runtime.enable"}))
            context = None
            while True:
                message = json.loads(browser.ws.recv(timeout=30))
                if message.get("method") == "Runtime.executionContextCreated":
                    ctx = message["params"]["context"]
                    aux = ctx.get("auxData") or {}
                    if aux.get("frameId") == frame["id"] and aux.get("isDefault"):
                        context = ctx["id"]
                if message.get("id") == browser.next_id:
                    break
            if context is not None:
                app = Frame(browser, context)
                if app.run("document.readyState === 'complete' && !!window.imagingApp"):
                    return app
                state = str(app.run("document.body && document.body.innerText"))[:500]
        time.sleep(0.3)
    raise AssertionError(f"the app never loaded at {prefix}: frames {seen}; page: {state}")


def screenshot(browser: Chromium, name: str) -> Path:
    import base64

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = browser.call("Page.captureScreenshot", format="png")["result"]["data"]
    path = SHOTS / name
    path.write_bytes(base64.b64decode(shot))
    return path


def study_for(app: Any, patient_id: str, datasets: list[Any]) -> str:
    """The ImagingStudy of a series stored in Orthanc, as the imaging bridge writes it."""
    first = datasets[0]
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{first.StudyInstanceUID}"}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "started": "2026-01-02T10:00:00Z",
        "modality": [{"system": DCM, "code": "CT"}],
        "description": str(first.StudyDescription),
        "numberOfSeries": 1,
        "numberOfInstances": len(datasets),
        "series": [
            {
                "uid": str(first.SeriesInstanceUID),
                "modality": {"system": DCM, "code": "CT"},
                "numberOfInstances": len(datasets),
                "description": "phantom",
                "instance": [
                    {
                        "uid": str(d.SOPInstanceUID),
                        "number": i + 1,
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": f"urn:oid:{d.SOPClassUID}",
                        },
                    }
                    for i, d in enumerate(datasets)
                ],
            }
        ],
    }
    results = app.state.store.apply(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": study, "request": {"method": "POST", "url": "ImagingStudy"}}],
        }
    )
    return str(results[0].res_id)


def ai_report_of(app: Any, study_id: str, seconds: float = 120) -> dict[str, Any]:
    reads = app.state.fhir_reads.with_access(None)
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = reads.search("DiagnosticReport", [("study", f"ImagingStudy/{study_id}")])
        if found:
            return found[0]
        time.sleep(0.5)
    tasks = reads.search("Task", [])
    raise AssertionError(f"the AI worker made no report: {[t.get('status') for t in tasks]}")


class Ehr:
    """A CDS client calling the live server's patient-view service."""

    def __init__(self, app: Any, origin: str) -> None:
        self.origin = origin
        self.key = ECKey.generate_key("P-384", parameters={"kid": "oe-cds"})
        app.state.cds.clients.add(
            "https://openemr.example", "OpenEMR", jwks={"keys": [self.key.as_dict(private=False)]}
        )

    def ai_cards(self, patient: str) -> list[dict[str, Any]]:
        url = f"{self.origin}/cds-services/ai-findings-review"
        claims = {
            "iss": "https://openemr.example",
            "aud": url,
            "exp": int(time.time()) + 60,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode({"alg": "ES384", "kid": "oe-cds"}, claims, self.key, ["ES384"])
        body = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": patient, "userId": "Practitioner/x"},
        }
        response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return list(response.json()["cards"])


def test_imaging_app_from_openemr_chart(
    database_url: str, sim: OpenEmrSimulator, browser: Chromium
) -> None:
    our_port = free_port()
    ours = f"http://127.0.0.1:{our_port}"
    with running_orthanc() as orthanc:
        app = create_app(
            Settings(
                database_url=database_url,
                auth="on",
                base_url=f"{ours}/fhir",
                mllp_port=0,
                orthanc_url=orthanc.url,
                dicomweb_url=orthanc.dicomweb,
                orthanc_user=USER,
                orthanc_password=PASSWORD,  # type: ignore[arg-type]
                imaging_reconcile_seconds=0,
                imaging_poll_seconds=3600,
                ai_rules=[{"model": "ct-classical", "modality": "CT"}],  # type: ignore[arg-type]
                **bridge_settings(sim.base),
            )
        )
        clear_tables(app.state.store.engine, keep={"auth_signing_keys", "auth_clients"})
        oe_client = sim.clients[CLIENT_ID]
        oe_client.redirect_uris = [f"{ours}/openemr/callback"]
        oe_client.initiate_login_uri = f"{ours}/openemr/launch"
        sim.add_user(CLINICIAN, CLINICIAN_PASSWORD)
        syncer = build_syncer(app.state.runtime.openemr_settings(), app.state.context)
        assert syncer is not None
        rows = [
            sim.add_patient(fname="Mai", lname="Nguyen", DOB="1975-03-04", sex="Female"),
            sim.add_patient(fname="Ola", lname="Berg", DOB="1960-01-01", sex="Male"),
        ]
        patients = [syncer.sync_patient(r["uuid"])[1] for r in rows]
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        stow = DICOMwebClient(orthanc.dicomweb, session=session)
        studies = []
        for n, patient in enumerate(patients):
            datasets = write_series(make_phantom(slices=5, size=48))
            for d in datasets:
                d.StudyDescription = f"CT phantom {n + 1}"
            stow.store_instances(datasets)
            studies.append(study_for(app, str(patient), datasets))
        mine, theirs = str(patients[0]), str(patients[1])
        labs = [(4.1, "N", "2026-11-01"), (5.2, "H", "2026-11-15"), (6.9, "HH", "2026-12-01")]
        app.state.store.apply({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {
                "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{mine}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
                "valueQuantity": {"value": value, "unit": "mmol/L"}, "effectiveDateTime": f"{day}T08:00:00Z",
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]}]},
             "request": {"method": "POST", "url": "Observation"}} for value, flag, day in labs]})  # fmt: skip
        with Served(app, our_port):
            reports = [ai_report_of(app, s) for s in studies]  # the real AI worker, ct-classical
            assert reports[0]["status"] == "preliminary"
            ehr = Ehr(app, ours)
            assert len(ehr.ai_cards(mine)) == 1

            dashboard = "/interface/patient_file/summary/demographics.php?" + urlencode(
                {"puuid": rows[0]["uuid"], "client_id": CLIENT_ID}
            )
            login = f"{sim.base}/interface/login/login.php?" + urlencode({"next": dashboard})
            browser.call("Page.enable")
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=1000,
                height=760,
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.call("Page.navigate", url=login)
            browser.wait_for("!!document.querySelector('input[name=authUser]')")
            browser.evaluate(
                f"document.querySelector('input[name=authUser]').value = {json.dumps(CLINICIAN)};"
                f"document.querySelector('input[name=clearPass]').value = {json.dumps(CLINICIAN_PASSWORD)};"
                "document.querySelector('form').submit(); true"
            )  # the only sign-in: at OpenEMR
            frame = find_frame(browser, f"{ours}/apps/imaging/")
            frame.wait_for("document.querySelectorAll('.study img[data-loaded]').length > 0", 60)
            listed = frame.evaluate(
                "[...document.querySelectorAll('.study')].map(b => b.dataset.study)"
            )
            assert listed == [studies[0]]  # confined: only this patient's study
            assert frame.evaluate("document.querySelectorAll('.report').length") == 1
            # lab results: a table with the abnormal ones flagged, and a trend chart per test
            assert frame.evaluate("document.querySelectorAll('#labs tbody tr').length") == 3
            assert frame.evaluate("document.querySelectorAll('#labs tr.abnormal').length") == 2
            assert frame.evaluate("document.querySelectorAll('#labs tr.critical').length") == 1
            assert frame.evaluate("imagingApp.charts.data.datasets[0].data") == [4.1, 5.2, 6.9]
            assert frame.evaluate("document.getElementById('trend').width") > 0
            assert (
                frame.evaluate("document.querySelector('.report').dataset.report")
                == reports[0]["id"]
            )
            # the patient-confined launch reads who made the report: the model's Provenance
            made = frame.evaluate("document.querySelector('.report .provenance').textContent")
            assert (
                frame.evaluate("document.querySelector('.report .provenance').dataset.count") == "1"
            )
            assert "CREATE by Device/" in made, made

            frame.evaluate("document.querySelector('.study').click(); true")
            frame.wait_for("document.getElementById('viewport').dataset.index !== undefined", 60)
            frame.wait_for("!!document.querySelector('#viewport canvas')")
            start = int(frame.evaluate("document.getElementById('viewport').dataset.index"))
            frame.evaluate(
                "document.getElementById('viewport').dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true})); true"
            )
            frame.wait_for(f"document.getElementById('viewport').dataset.index === '{start + 1}'")
            before = frame.evaluate("document.getElementById('viewport').dataset.voi")
            frame.evaluate(
                "document.getElementById('viewport').dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true})); true"
            )
            frame.wait_for(
                f"document.getElementById('viewport').dataset.voi !== {json.dumps(before)}"
            )
            time.sleep(0.5)
            screenshot(browser, "imaging-app-openemr.png")

            # the token is confined to the launch patient: another patient's data is refused
            other = frame.run(
                f"imagingApp.client.request('ImagingStudy/{studies[1]}').then(() => 'read', e => String(e.status || e.message))"
            )
            assert other != "read"
            assert (
                frame.run(
                    f"fetch('{ours}/fhir/DiagnosticReport?subject=Patient/{theirs}', {{headers: {{Authorization: 'Bearer ' + imagingApp.token()}}}}).then(r => r.json()).then(b => (b.entry || []).length)"
                )
                == 0
            )

            frame.evaluate("document.querySelector('.report .approve').click(); true")
            frame.wait_for(
                "document.querySelector('.report .badge').dataset.status === 'final'", 30
            )
            frame.wait_for("document.querySelector('.report .provenance').dataset.count === '2'")
            reviewed = frame.evaluate("document.querySelector('.report .provenance').textContent")
            assert " LA by " in reviewed, reviewed  # the reviewer's record, after the model's
            frame.evaluate("document.querySelector('.report').scrollIntoView(); true")
            time.sleep(0.3)
            screenshot(browser, "imaging-app-approved.png")
            assert ehr.ai_cards(mine) == []  # the card is gone
            assert len(ehr.ai_cards(theirs)) == 1  # the other patient's still waits
    app.state.store.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_imaging_app_standalone_launch(database_url: str, browser: Chromium) -> None:
    """Opened directly, the app signs the user in, lets them pick a patient, and then shows
    only that patient's studies."""
    our_port = free_port()
    ours = f"http://127.0.0.1:{our_port}"
    app = create_app(Settings(database_url=database_url, auth="on", base_url=f"{ours}/fhir",
                              mllp_port=0))  # fmt: skip
    clear_tables(app.state.store.engine, keep={"auth_signing_keys", "auth_clients"})
    app.state.auth.registry.add_user("drstand", CLINICIAN_PASSWORD, "physician", "Practitioner/s")
    store = app.state.store
    ids = []
    for family in ("Alpha", "Beta"):
        [patient] = store.apply({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "name": [{"family": family}]},
             "request": {"method": "POST", "url": "Patient"}}]})  # fmt: skip
        [study] = store.apply({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "ImagingStudy", "status": "available",
                          "description": f"study of {family}",
                          "subject": {"reference": f"Patient/{patient.res_id}"}},
             "request": {"method": "POST", "url": "ImagingStudy"}}]})  # fmt: skip
        ids.append((str(patient.res_id), str(study.res_id)))
    with Served(app, our_port):
        focus = f"{ours}/apps/imaging/launch?focus=ImagingStudy%2F{ids[0][1]}"  # a card's link
        browser.call("Page.navigate", url=focus)
        browser.wait_for("!!document.querySelector('input[name=username]')")
        browser.evaluate(
            "document.querySelector('input[name=username]').value = 'drstand';"
            f"document.querySelector('input[name=password]').value = {json.dumps(CLINICIAN_PASSWORD)};"
            "document.querySelector('form').submit(); true"
        )
        browser.wait_for(f"!!document.querySelector('input[value=\"{ids[0][0]}\"]')")
        browser.evaluate(
            f"document.querySelector('input[value=\"{ids[0][0]}\"]').checked = true;"
            "document.querySelector('form[action=pick][method=post]').submit(); true"
        )
        browser.wait_for("!!document.querySelector('button[value=allow]')")
        browser.evaluate("document.querySelector('button[value=allow]').click(); true")
        browser.wait_for("!!window.imagingApp && document.querySelectorAll('.study').length > 0")
        listed = browser.evaluate(
            "[...document.querySelectorAll('.study')].map(b => b.dataset.study)"
        )
        assert listed == [ids[0][1]]
        assert "Alpha" in browser.evaluate("document.getElementById('patient').textContent")
        title = "document.getElementById('viewer-title').textContent"
        assert browser.wait_for(f"{title} === 'study of Alpha'")  # opened on the focus
    app.state.store.engine.dispose()
