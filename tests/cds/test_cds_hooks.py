"""CDS Hooks over HTTP: discovery, each service with and without prefetch, cards appearing and
disappearing as AI reports are reviewed and critical results acknowledged, feedback kept as
AuditEvents. Runs on SQLite and PostgreSQL (the session app's database)."""

# ruff: noqa: F811 - the fixtures imported from cds_support are parameters by name

from __future__ import annotations

from typing import Any

import pytest
from cds_support import (  # noqa: F401 - fixtures are used by name
    CHEST,
    ROOT,
    SNOMED,
    Data,
    Ehr,
    cds_app,
    cds_session_app,
    data,
    draft_order,
    ehr,
    http,
    iso,
    orders_context,
    smart,
    user_token,
)
from starlette.testclient import TestClient

HEAD = {"system": SNOMED, "code": "69536005", "display": "Head"}


def test_discovery_lists_the_services_and_their_prefetch(http: TestClient) -> None:
    response = http.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert services["ai-findings-review"]["hook"] == "patient-view"
    assert services["critical-labs"]["hook"] == "patient-view"
    assert services["imaging-order-duplicate"]["hook"] == "order-sign"
    assert services["imaging-order-duplicate-select"]["hook"] == "order-select"
    for service in services.values():
        assert service["title"] and service["description"]
        assert all("{{context.patientId}}" in t for t in service["prefetch"].values())


# -- AI findings awaiting review ----------------------------------------------------------------


def test_ai_card_per_unreviewed_report_until_approved(
    ehr: Ehr, data: Data, smart: Any, http: TestClient
) -> None:
    p = data.patient("p1")
    data.ai_report("r1", p, flag="HH", conclusion="Pericardial fat volume markedly increased")
    data.ai_report("r2", p, flag="N", conclusion="")
    other = data.patient("p2")
    data.ai_report("r3", other)
    cards = ehr.patient_view("ai-findings-review", p)
    assert len(cards) == 2
    by_summary = {c["summary"]: c for c in cards}
    first = by_summary["AI finding awaiting review: Pericardial fat volume markedly increased"]
    assert first["indicator"] == "critical"
    assert "fat-volume 2.1.0" in first["source"]["label"]
    assert "Pericardial fat volume: 231.5 mL (Critical high)" in first["detail"]
    link = first["links"][0]
    assert (
        link["type"] == "smart"
        and link["url"] == f"{ROOT}/apps/imaging/launch?focus=DiagnosticReport%2Fr1"
    )
    assert "DiagnosticReport/r1" in link["appContext"]
    second = by_summary["AI analysis by fat-volume 2.1.0 awaiting review"]
    assert second["indicator"] == "info"

    token = user_token(smart, "drhouse", "physician", "user/*.cruds")
    approved = http.post(
        "/fhir/DiagnosticReport/r1/$approve",
        json={"resourceType": "Parameters"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert approved.status_code == 200, approved.text
    rejected = http.post(
        "/fhir/DiagnosticReport/r2/$reject",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "motion artefact"}],
        },
    )
    assert rejected.status_code == 200, rejected.text
    assert ehr.patient_view("ai-findings-review", p) == []
    assert len(ehr.patient_view("ai-findings-review", other)) == 1


def test_ai_cards_from_prefetch_when_sent(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    report = data.ai_report("r1", p, flag="H")
    obs = {
        "resourceType": "Observation",
        "id": "obs-r1",
        "status": "preliminary",
        "code": {"text": "Fat"},
        "subject": {"reference": f"Patient/{p}"},
        "valueQuantity": {"value": 12, "unit": "mL"},
        "interpretation": [{"coding": [{"code": "H"}]}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": report, "search": {"mode": "match"}},
            {"resource": obs, "search": {"mode": "include"}},
        ],
    }
    cards = ehr.patient_view("ai-findings-review", p, prefetch={"aiReports": bundle})
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "Fat: 12 mL (High)" in cards[0]["detail"]
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    assert ehr.patient_view("ai-findings-review", p, prefetch={"aiReports": empty}) == []
    # a null prefetch value means "not fetched": the service reads the store
    assert len(ehr.patient_view("ai-findings-review", p, prefetch={"aiReports": None})) == 1


# -- critical lab results ---------------------------------------------------------------------


def test_critical_labs_by_interpretation_and_by_range(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    data.lab("k", p, "2823-3", 6.9, "mmol/L", name="Potassium")  # above 6.2, no flag
    data.lab("na", p, "2951-2", 118, "mmol/L", flag="LL", name="Sodium")
    data.lab("glu", p, "2345-7", 95, "mg/dL", flag="N", name="Glucose")  # normal
    data.lab("hb", p, "718-7", 12, "g/dL", flag="H", name="Hemoglobin")  # high, not critical
    data.lab("k-mg", p, "2823-3", 9.9, "mg/dL", name="Potassium")  # other unit: not compared
    data.lab("old", p, "2823-3", 7.5, "mmol/L", flag="HH", issued=iso(20))  # too old
    cards = ehr.patient_view("critical-labs", p)
    summaries = sorted(c["summary"] for c in cards)
    assert summaries == [
        "Critical result: Potassium 6.9 mmol/L (above the critical limit 6.2 mmol/L)",
        "Critical result: Sodium 118 mmol/L (critical low)",
    ]
    assert all(c["indicator"] == "critical" for c in cards)
    assert all(c["suggestions"][0]["label"].startswith("Acknowledge") for c in cards)
    assert all(c["overrideReasons"] for c in cards)


def test_acknowledged_result_disappears_and_a_correction_alerts_again(
    ehr: Ehr, data: Data, http: TestClient, smart: Any
) -> None:
    p = data.patient("p1")
    data.lab("k", p, "2823-3", 6.9, "mmol/L", flag="HH", name="Potassium")
    data.lab("ca", p, "17861-6", 14.1, "mg/dL", flag="HH", name="Calcium")
    cards = {c["summary"].split()[2]: c for c in ehr.patient_view("critical-labs", p)}
    k = cards["Potassium"]
    response = ehr.feedback(
        "critical-labs",
        [
            {
                "card": k["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": iso(),
                "acceptedSuggestions": [{"id": k["suggestions"][0]["uuid"]}],
            }
        ],
    )
    assert response.status_code == 200, response.text
    override = cards["Calcium"]["overrideReasons"][0]
    response = ehr.feedback(
        "critical-labs",
        [
            {
                "card": cards["Calcium"]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": iso(),
                "overrideReason": {"reason": override, "userComment": "called the ward"},
            }
        ],
    )
    assert response.status_code == 200, response.text
    # acknowledged (accepted) is gone; overridden stays until someone acknowledges it
    assert [c["summary"].split()[2] for c in ehr.patient_view("critical-labs", p)] == ["Calcium"]
    # a corrected result is a new version: it alerts again
    data.lab("k", p, "2823-3", 7.1, "mmol/L", flag="HH", name="Potassium")
    again = sorted(c["summary"].split()[2] for c in ehr.patient_view("critical-labs", p))
    assert again == ["Calcium", "Potassium"]

    token = user_token(smart, "auditor", "admin", "user/*.rs")
    events = http.get(
        "/fhir/AuditEvent?subtype=urn:interop:cds:outcome|overridden",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    [event] = [e["resource"] for e in events["entry"]]
    details = {d["type"]: d["valueString"] for d in event["entity"][0]["detail"]}
    assert event["entity"][0]["what"]["reference"] == "Observation/ca"
    assert details["userComment"] == "called the ward"
    assert override["code"] in details["overrideReason"]
    assert event["agent"][0]["who"]["identifier"]["value"] == ehr.iss
    assert {"reference": f"Patient/{p}"} == event["entity"][1]["what"]


def test_labs_from_prefetch(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    data.lab("k", p, "2823-3", 6.9, "mmol/L", flag="HH")  # in the store, not in the prefetch
    sent = {
        "resourceType": "Observation",
        "id": "x1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2951-2", "display": "Sodium"}]},
        "subject": {"reference": f"Patient/{p}"},
        "issued": iso(1),
        "valueQuantity": {"value": 165, "unit": "mmol/L", "code": "mmol/L"},
    }
    other = dict(sent, id="x2", subject={"reference": "Patient/someone-else"})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": sent}, {"resource": other}],
    }
    cards = ehr.patient_view("critical-labs", p, prefetch={"observations": bundle})
    assert [c["summary"] for c in cards] == [
        "Critical result: Sodium 165 mmol/L (above the critical limit 160 mmol/L)"
    ]


# -- duplicate imaging orders -------------------------------------------------------------------


def test_duplicate_order_warns_with_a_delete_suggestion(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    data.study("ct-recent", p, "CT", CHEST, days_ago=5)
    data.study("ct-old", p, "CT", CHEST, days_ago=90)
    data.study("mr-head", p, "MR", HEAD, days_ago=2)
    orders = [
        draft_order("o1", p, "CT", CHEST),
        draft_order("o2", p, "MR", CHEST),
        draft_order("o3", p, "CT", HEAD),
    ]
    response = ehr.call("imaging-order-duplicate", "order-sign", orders_context(p, *orders))
    assert response.status_code == 200, response.text
    [card] = response.json()["cards"]
    assert card["indicator"] == "warning"
    assert card["summary"] == "Possible duplicate: CT Chest already done 5 days ago"
    [suggestion] = card["suggestions"]
    assert suggestion["actions"] == [
        {
            "type": "delete",
            "resourceId": ["ServiceRequest/o1"],
            "description": "Remove the draft order ServiceRequest/o1",
        }
    ]
    assert card["selectionBehavior"] == "at-most-one"
    assert "ImagingStudy/ct-recent" in card["links"][0]["appContext"]


def test_order_select_only_judges_the_selected_orders(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    data.study("ct", p, "CT", CHEST, days_ago=1)
    orders = [draft_order("o1", p, "CT", CHEST), draft_order("o2", p, "CT", CHEST)]
    context = orders_context(p, *orders) | {"selections": ["ServiceRequest/o2"]}
    response = ehr.call("imaging-order-duplicate-select", "order-select", context)
    assert response.status_code == 200, response.text
    [card] = response.json()["cards"]
    assert card["suggestions"][0]["actions"][0]["resourceId"] == ["ServiceRequest/o2"]


def test_duplicate_order_from_prefetch(ehr: Ehr, data: Data) -> None:
    p = data.patient("p1")
    data.study("ct", p, "CT", CHEST, days_ago=1)
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    context = orders_context(p, draft_order("o1", p, "CT", CHEST))
    response = ehr.call(
        "imaging-order-duplicate", "order-sign", context, prefetch={"studies": empty}
    )
    assert response.json()["cards"] == []
    response = ehr.call("imaging-order-duplicate", "order-sign", context)
    assert len(response.json()["cards"]) == 1


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"hook": "order-sign"}, "answers the patient-view hook"),
        ({"context": {"patientId": "../Patient/x"}}, "context.patientId must be a FHIR id"),
        ({"context": "p1"}, "context must be a JSON object"),
        ({"prefetch": {"observations": [1, 2]}}, "prefetch.observations must be"),
        (
            {
                "prefetch": {
                    "observations": {
                        "resourceType": "Bundle",
                        "entry": [
                            {
                                "resource": {
                                    "resourceType": "Observation",
                                    "id": "x",
                                    "code": "not-a-concept",
                                    "interpretation": [{"coding": "oops"}],
                                    "meta": "v1",
                                }
                            }
                        ],
                    }
                }
            },
            "wrong shape",
        ),
    ],
)
def test_malformed_calls_get_a_clear_400(
    ehr: Ehr, data: Data, body: dict[str, Any], expected: str
) -> None:
    data.patient("p1")
    payload = {"hook": "patient-view", "context": {"patientId": "p1"}} | body
    hook = payload.pop("hook")
    context = payload.pop("context")
    response = ehr.call("critical-labs", hook, context, **payload)
    assert response.status_code == 400, response.text
    assert expected in response.json()["issue"][0]["diagnostics"]


def test_feedback_on_unknown_card_or_bad_outcome(ehr: Ehr) -> None:
    response = ehr.feedback(
        "critical-labs", [{"card": "0c0c0c0c-0000-4000-8000-000000000000", "outcome": "accepted"}]
    )
    assert response.status_code == 404
    response = ehr.feedback("critical-labs", [{"card": "x", "outcome": "ignored"}])
    assert response.status_code == 400
    assert "accepted or overridden" in response.json()["issue"][0]["diagnostics"]


def test_each_call_is_audited_with_client_and_patient(ehr: Ehr, data: Data, cds_app: Any) -> None:
    p = data.patient("p1")
    ehr.patient_view("critical-labs", p)
    cds_app.state.audit.flush()
    reads = cds_app.state.fhir_reads.with_access(None)
    events = reads.search("AuditEvent", [("patient", f"Patient/{p}"), ("subtype", "operation")])
    assert len(events) == 1
    agent = events[0]["agent"][0]
    assert ehr.iss in str(agent)


def test_concurrent_calls_issuing_the_same_cards(ehr: Ehr, data: Data) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = data.patient("p1")
    data.lab("k", p, "2823-3", 6.9, "mmol/L", flag="HH")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ehr.patient_view("critical-labs", p), range(8)))
    assert {r[0]["uuid"] for r in results} == {results[0][0]["uuid"]}
    assert (
        ehr.feedback(
            "critical-labs", [{"card": results[0][0]["uuid"], "outcome": "accepted"}]
        ).status_code
        == 200
    )
