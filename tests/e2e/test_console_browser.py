"""The operator console in headless Chromium against the real server on a socket: an operator
signs in, finds an HL7 message by a word inside it, opens it, follows the link to the Patient
it created, replays a failed message and sees it succeed; an operator cannot open the
administration; a patient app's token opens nothing under /console. Each page is saved as a
screenshot under tests/artifacts/screenshots/console/ (see README, "Operator console").
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import update

from hl7_listener.inbox import hl7_messages

HERE = Path(__file__).resolve().parent
SHOTS = HERE.parent / "artifacts" / "screenshots" / "console"
PASSWORD = "operator password 1"


def play(origin: str, steps: list[dict[str, Any]], headers: dict[str, str] | None = None,
         ) -> dict[str, Any]:  # fmt: skip
    from conftest import CHROMIUM

    done = subprocess.run(
        ["node", str(HERE / "console.mjs"), CHROMIUM],
        input=json.dumps({"steps": steps, "headers": headers or {}}),
        cwd=HERE, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = dict(json.loads(done.stdout))
    assert "error" not in result, json.dumps({k: v for k, v in result.items() if k != "steps"})
    # no script error (a refused page's 403 and the browser's /favicon.ico 404 are logged too)
    errors = [m for m in result["console"] if "Failed to load resource" not in m]
    assert not errors, errors
    assert all(r == f"done {origin}" for r in result["requests"]), result["requests"]
    return result


def shot(name: str, db: str) -> dict[str, str]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return {"screenshot": str(SHOTS / f"{db}-{name}.png")}


def sign_in(origin: str, username: str) -> list[dict[str, Any]]:
    return [
        {"goto": f"{origin}/console/messages"},
        {"fill": "input[name=username]", "value": username},
        {"fill": "input[name=password]", "value": PASSWORD},
        {"press": "input[name=password]", "key": "Enter"},
    ]


def hl7(control_id: str, mrn: str, family: str, note: str) -> bytes:
    return (
        f"MSH|^~\\&|LABSYS|NORTH|INTEROP|HOSP|20260131080000||ORU^R01|{control_id}|P|2.5.1\r"
        f"PID|1||{mrn}^^^NORTH^MR||{family}^Grace||19800202|F\r"
        f"OBR|1||ORD-{control_id}|2345-7^Glucose^LN|||20260131075500\r"
        f"OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F\r"
        f"NTE|1||{note}\r"
    ).encode()


def test_operator_finds_opens_follows_and_replays(browser_tools: None, server: Any) -> None:
    app, origin = server.app, server.origin
    db = "postgresql" if "postgresql" in server.database_url else "sqlite"
    tag = uuid.uuid4().hex[:6]
    user = f"olga{tag}"
    app.state.auth.registry.add_user(user, PASSWORD, "operator", None)
    word = f"kumquat{tag}"
    found = app.state.hl7.handle(hl7(f"F{tag}", f"M{tag}", f"Hopper{tag}", word), "e2e").pk
    failed = app.state.hl7.handle(hl7(f"R{tag}", f"N{tag}", f"Lovelace{tag}", "later"), "e2e").pk
    with app.state.store.engine.begin() as conn:  # as a database outage leaves a message
        conn.execute(
            update(hl7_messages)
            .where(hl7_messages.c.pk == failed)
            .values(status="failed", error="database unavailable", resources=None)
        )

    result = play(origin, [
        *sign_in(origin, user),
        shot("messages", db),
        {"fill": "input[name=q]", "value": word},
        {"press": "input[name=q]", "key": "Enter"},
        shot("search", db),
        {"click": f"a[href='/console/messages/{found}']"},
        shot("message", db),
        {"click": "dd a[href^='/console/fhir/Patient/']"},
        shot("patient", db),
        {"goto": f"{origin}/console/messages?status=failed"},
        {"click": f"a[href='/console/messages/{failed}']"},
        {"click": "form[action$='/replay'] button"},
        shot("replayed", db),
        {"goto": f"{origin}/console/dashboard"},
        shot("dashboard", db),
        {"goto": f"{origin}/console/fhir"},
        shot("fhir", db),
        {"goto": f"{origin}/console/admin"},
        shot("admin-refused", db),
        {"goto": f"{origin}/console/dashboard"},
        {"tab": 2},
    ])  # fmt: skip
    by_shot = {Path(s["step"]["screenshot"]).stem.split("-", 1)[1]: s for s in result["steps"]
               if "screenshot" in s["step"]}  # fmt: skip
    search = by_shot["search"]
    assert f"Hopper{tag}" not in search["text"] and f"F{tag}" in search["text"]
    assert f"R{tag}" not in search["text"]  # only the message holding the word
    message = by_shot["message"]
    assert f"/console/messages/{found}" in message["url"]
    assert "Patient identifier list" in message["text"] and f"MSA|AA|F{tag}" in message["text"]
    patient = by_shot["patient"]
    assert "/console/fhir/Patient/" in patient["url"] and f"Hopper{tag}" in patient["text"]
    replayed = by_shot["replayed"]
    assert "Replayed: the message is now processed" in replayed["text"]
    assert "Patient/" in replayed["text"]
    assert "Channel dashboard" in by_shot["dashboard"]["text"]
    refused = by_shot["admin-refused"]
    assert refused["title"].startswith("Not possible") and "needs role admin" in refused["text"]
    assert [s["status"] for s in result["steps"] if s["step"].get("goto", "").endswith(
        "/console/admin")] == [403]  # fmt: skip
    assert result["steps"][-1]["focused"].startswith("a")  # the keyboard reaches the links


def test_patient_token_opens_nothing(browser_tools: None, server: Any) -> None:
    app, origin = server.app, server.origin
    token = app.state.auth.tokens.access_token(
        client_id="growth-chart", subject="pat", scope="launch/patient patient/*.rs",
        lifetime=300, context={"patient": "p1", "role": "patient"},
    )  # fmt: skip
    pages = ["/console", "/console/messages", "/console/fhir/Patient", "/console/admin",
             "/console/dashboard/figures"]  # fmt: skip
    result = play(origin, [{"goto": origin + p} for p in pages],
                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    for step in result["steps"]:
        assert "/console/login" in step["url"] and "Sign in to the console" in step["text"]
