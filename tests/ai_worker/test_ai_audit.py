"""An AI write-back leaves an AuditEvent naming the model (name and version) and the report
and findings it wrote."""

from __future__ import annotations

from ai_support import upload_study
from audit_support import assert_change_audited, audited
from test_ai_embedded import no_rules, wait_for_jobs  # noqa: F401 - no_rules is a fixture

from ai_worker.phantom import make_phantom, write_series


def test_ai_write_back_is_audited_with_the_model(ai_client, orthanc, no_rules) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, study = upload_study(ai_client, orthanc, write_series(make_phantom(slices=4, size=32)))
    service = ai_client.app.state.ai.service
    plugin = service.registry.get("ct-classical")
    store = ai_client.app.state.store
    with audited(store):
        task_id, _ = service.request(study["id"], "ct-classical")
        wait_for_jobs(ai_client)
    reports = ai_client.get("/fhir/DiagnosticReport", params={"based-on": f"Task/{task_id}"}).json()
    if not reports.get("total"):
        reports = ai_client.get("/fhir/DiagnosticReport").json()
    report = reports["entry"][0]["resource"]
    written = [f"DiagnosticReport/{report['id']}", *(r["reference"] for r in report["result"])]
    model = f"{plugin.name} {plugin.version}"
    assert_change_audited(store, written, "ai", model)
    assert_change_audited(store, [f"Task/{task_id}"], "ai", "")
