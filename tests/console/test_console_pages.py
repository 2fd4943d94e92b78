"""The console's pages as an operator and an admin use them: messages, replay, dashboard,
FHIR browser, administration; and every action leaves an AuditEvent."""

from __future__ import annotations

import re
from typing import Any

import orjson
from console_support import adt, csrf_of, store
from sqlalchemy import select, update
from starlette.testclient import TestClient

from console import figures
from fhir_server.api.context import FhirRequest
from fhir_server.api.router import dispatch
from hl7_listener.inbox import hl7_messages


def fail(app: Any, pk: int, error: str = "database unavailable") -> None:
    """Mark a message failed, as a transient failure (the database was down) leaves it."""
    with app.state.store.engine.begin() as conn:
        conn.execute(update(hl7_messages).where(hl7_messages.c.pk == pk)
                     .values(status="failed", error=error, resources=None))  # fmt: skip


def audited(app: Any, subtype: str) -> list[dict[str, Any]]:
    """The AuditEvents of one kind of console action, read like any FHIR client would."""
    app.state.audit.flush()
    response = dispatch(
        app.state.context, FhirRequest("GET", ["AuditEvent"], [("subtype", subtype)], {})
    )
    return [e["resource"] for e in orjson.loads(response.body).get("entry") or []]


def test_find_open_follow_and_replay(console_app: Any, operator: TestClient) -> None:
    pk = store(console_app, adt("F-1", "MRN-1", "Found", extra="NTE|1||zucchini"))
    page = operator.get("/console/messages", params={"q": "zucchini"})
    assert page.status_code == 200 and f'href="/console/messages/{pk}"' in page.text
    message = operator.get(f"/console/messages/{pk}")
    assert "Patient identifier list" in message.text and "MSA|AA|F-1" in message.text
    patient = re.search(r'href="(/console/fhir/Patient/[^"]+)"', message.text)
    assert patient, message.text
    shown = operator.get(patient.group(1))
    assert shown.status_code == 200 and "Found" in shown.text and "History" in shown.text
    fail(console_app, pk)
    failed = operator.get("/console/messages", params={"status": "failed"})
    assert f'href="/console/messages/{pk}"' in failed.text
    replayed = operator.post(f"/console/messages/{pk}/replay",
                             data={"csrf": csrf_of(message.text)})  # fmt: skip
    assert replayed.status_code == 200 and "now <strong>processed</strong>" in replayed.text
    assert audited(console_app, "hl7-replay")


def test_replay_a_filtered_set_shows_each_outcome(console_app: Any, operator: TestClient) -> None:
    first = store(console_app, adt("S-1", "M1", "Set"))
    second = store(console_app, adt("S-2", "M2", "Set"))
    untouched = store(console_app, adt("S-3", "M3", "Other"))
    for pk in (first, second, untouched):
        fail(console_app, pk)
    page = operator.get("/console/messages", params={"status": "failed", "q": "set"})
    done = operator.post("/console/messages/replay", data={
        "csrf": csrf_of(page.text), "status": "failed", "q": "set", "scope": "all"})  # fmt: skip
    assert done.status_code == 200 and "processed: <strong>2</strong>" in done.text
    with console_app.state.store.engine.connect() as conn:
        status = dict(conn.execute(select(hl7_messages.c.pk, hl7_messages.c.status)).all())
    assert (status[first], status[second], status[untouched]) == ("processed", "processed",
                                                                  "failed")  # fmt: skip
    nothing = operator.post("/console/messages/replay",
                            data={"csrf": csrf_of(page.text), "scope": "selected"})  # fmt: skip
    assert nothing.status_code == 400  # nothing ticked: nothing replayed


def test_export_selected(console_app: Any, operator: TestClient) -> None:
    a = store(console_app, adt("X-1", "M1", "Exp"))
    store(console_app, adt("X-2", "M2", "Exp"))
    page = operator.get("/console/messages")
    got = operator.post(
        "/console/messages/export",
        data={"csrf": csrf_of(page.text), "scope": "selected", "id": [str(a)]},
    )
    assert got.status_code == 200 and b"X-1" in got.content and b"X-2" not in got.content
    assert "attachment" in got.headers["content-disposition"]
    everything = operator.get("/console/messages/export", params={"q": "exp"})
    assert everything.content.count(b"MSH|") == 2


def test_dashboard_and_its_refresh(console_app: Any, operator: TestClient) -> None:
    pk = store(console_app, adt("D-1", "M1", "Dash"))
    fail(console_app, pk, "no such patient identifier system")
    page = operator.get("/console/dashboard")
    assert page.status_code == 200 and 'data-refresh="/console/dashboard/figures"' in page.text
    fragment = operator.get("/console/dashboard/figures")
    assert "no such patient identifier system" in fragment.text and "<html" not in fragment.text
    assert "LAB^HOSP" in fragment.text


def test_figures_count_each_message_once(console_app: Any) -> None:
    for i in range(3):
        store(console_app, adt(f"N-{i}", f"M{i}", "Count"))
    fail(console_app, store(console_app, adt("N-9", "M9", "Count")))
    hl7 = figures.collect(console_app.state.store.engine)["hl7"]
    assert hl7["window_by_status"] == {"processed": 3, "failed": 1}
    totals: dict[str, int] = {}
    for minute in hl7["per_minute"]:
        for status, count in minute["counts"].items():
            totals[status] = totals.get(status, 0) + count
    assert totals == {"processed": 3, "failed": 1}
    assert [e["sender"] for e in hl7["last_errors"]] == ["LAB^HOSP"]


def test_fhir_browser_search_history_and_diff(console_app: Any, operator: TestClient) -> None:
    pk = store(console_app, adt("H-1", "MRN-H", "Before"))
    store(console_app, adt("H-2", "MRN-H", "After", event="A08"))
    found = operator.get("/console/fhir/Patient", params={"q": "identifier=MRN-H"})
    link = re.search(r'href="(/console/fhir/Patient/[^"]+)"', found.text)
    assert link, found.text
    resource = operator.get(link.group(1))
    assert "After" in resource.text and 'name="a" value="1"' in resource.text
    diff = operator.get(link.group(1) + "/diff", params={"a": "1", "b": "2"})
    assert diff.status_code == 200
    assert re.search(r'class="del">-.*Before', diff.text) and re.search(
        r'class="add">\+.*After', diff.text)  # fmt: skip
    assert operator.get("/console/fhir/Nonsense").status_code == 404
    assert pk


def test_admin_manages_clients_users_and_keys(console_app: Any, admin: TestClient) -> None:
    page = admin.get("/console/admin")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    added = admin.post("/console/admin/clients", data={
        "csrf": csrf, "name": "Chart app", "type": "public",
        "redirect_uris": "https://chart.example/cb", "scope": "launch patient/*.rs"})  # fmt: skip
    assert added.status_code == 200 and "registered" in added.text
    client_id = re.search(r"client_id ([\w-]+)", added.text).group(1)  # type: ignore[union-attr]
    edited = admin.post(
        f"/console/admin/clients/{client_id}",
        data={"csrf": csrf, "redirect_uris": "https://chart.example/cb2", "scope": "patient/*.rs"},
    )
    assert edited.status_code == 200
    client = console_app.state.auth.registry.client(client_id)
    assert client.redirect_uris == ["https://chart.example/cb2"] and client.scope == [
        "patient/*.rs"
    ]
    bad = admin.post(f"/console/admin/clients/{client_id}", data={
        "csrf": csrf, "redirect_uris": "javascript:alert(1)", "scope": "x"})  # fmt: skip
    assert bad.status_code == 400 and "absolute http(s) URL" in bad.text
    user = admin.post(
        "/console/admin/users",
        data={"csrf": csrf, "username": "newbie", "password": "long enough pw", "role": "nurse"},
    )
    assert user.status_code == 200 and "newbie" in user.text
    role = admin.post("/console/admin/users/newbie/role", data={"csrf": csrf, "role": "operator"})
    assert role.status_code == 200 and console_app.state.auth.registry.user("newbie").role == (
        "operator")  # fmt: skip
    kids = len(console_app.state.auth.keys.jwks()["keys"])
    rotated = admin.post("/console/admin/keys/rotate", data={"csrf": csrf})
    assert rotated.status_code == 200 and len(console_app.state.auth.keys.jwks()["keys"]) == (
        kids + 1)  # fmt: skip
    revoked = admin.post(f"/console/admin/clients/{client_id}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 200 and console_app.state.auth.registry.client(client_id) is None
    log = admin.get("/console/admin/audit", params={"subtype": "client-add"})
    assert log.status_code == 200 and "client-add" in log.text
    for subtype in ("client-add", "client-update", "user-add", "user-role", "keys-rotate",
                    "client-revoke", "console-signin"):  # fmt: skip
        assert audited(console_app, subtype), subtype
