"""Class 4: side endpoints outside the policy. Every non-FHIR surface names the role or scope
it needs: the HL7 inbox and submission (operator role or system/hl7.* scope), Subscriptions
(the client's own only, header secrets never read back), $bulk-upload (import permission),
and token introspection and revocation (client authentication, own tokens)."""

# ruff: noqa: F811 - the fixtures imported from side_support are parameters by name

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from side_support import (  # noqa: F401 - fixtures are used by name
    Receiver,
    backend,
    bearer,
    eventually,
    http,
    is_outcome,
    patient_app,
    side_app,
    side_session_app,
    smart,
    two_patients,
    user_token,
)
from starlette.testclient import TestClient

MSG = (
    b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A04|H1|P|2.5.1\r"
    b"PID|1||77^^^HOSP^MR||Doe^John||19700101|M\r"
)
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}
SECRET = "Bearer s3cr3t-endpoint-credential"


def submitted(http: TestClient, smart: Any) -> str:
    """One message in the inbox (submitted by an operator backend); its id."""
    writer, _, _ = backend(smart, "system/hl7.write")
    response = http.post("/hl7/messages", content=MSG, headers={**writer, **HL7})
    assert response.status_code == 201, response.text
    return str(response.headers["X-Message-Id"])


def patients_named(http: TestClient, smart: Any, family: str) -> int:
    reader, _, _ = backend(smart, "system/*.rs")
    return int(http.get(f"/fhir/Patient?family={family}", headers=reader).json()["total"])


# -- the HL7 inbox and submission ------------------------------------------------------------


def test_anonymous_caller_cannot_reach_hl7_inbox_or_submit(http: TestClient, smart: Any) -> None:
    pk = submitted(http, smart)
    assert is_outcome(http.get("/hl7/messages"), 401)
    assert is_outcome(http.get(f"/hl7/messages/{pk}"), 401)
    assert is_outcome(http.post("/hl7/messages", content=MSG, headers=HL7), 401)


def test_patient_app_cannot_list_every_patients_raw_messages(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    pk = submitted(http, smart)
    app = patient_app(smart, two_patients["A"])
    listed = http.get("/hl7/messages", headers=app)
    assert is_outcome(listed, 403) and b"Doe" not in listed.content
    shown = http.get(f"/hl7/messages/{pk}", headers=app)
    assert is_outcome(shown, 403) and b"PID" not in shown.content


def test_patient_app_cannot_create_patients_by_submitting_hl7(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    app = patient_app(smart, two_patients["A"], "patient/*.cruds")
    response = http.post("/hl7/messages", content=MSG, headers={**app, **HL7})
    assert is_outcome(response, 403)
    assert patients_named(http, smart, "Doe") == 0


def test_clinician_without_operator_role_cannot_read_raw_messages(
    http: TestClient, smart: Any
) -> None:
    pk = submitted(http, smart)
    doctor = bearer(user_token(smart, "dora", "physician", "user/*.cruds")["access_token"])
    assert is_outcome(http.get("/hl7/messages", headers=doctor), 403)
    assert is_outcome(http.get(f"/hl7/messages/{pk}", headers=doctor), 403)
    assert is_outcome(http.post("/hl7/messages", content=MSG, headers={**doctor, **HL7}), 403)


def test_backend_with_fhir_scopes_only_does_not_get_the_hl7_inbox(
    http: TestClient, smart: Any
) -> None:
    everything, _, _ = backend(smart, "system/*.cruds")
    assert is_outcome(http.get("/hl7/messages", headers=everything), 403)
    assert is_outcome(http.post("/hl7/messages", content=MSG, headers={**everything, **HL7}), 403)


def test_admin_launching_a_patient_app_does_not_lend_it_the_inbox(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    """The admin's role reaches the inbox only through a user/ scope, not a patient app."""
    body = user_token(smart, "root", "admin", "launch/patient patient/*.rs", two_patients["A"])
    assert is_outcome(http.get("/hl7/messages", headers=bearer(body["access_token"])), 403)


def test_read_scope_does_not_allow_submission(http: TestClient, smart: Any) -> None:
    pk = submitted(http, smart)
    reader, _, _ = backend(smart, "system/hl7.read")
    assert http.get("/hl7/messages", headers=reader).status_code == 200
    assert http.get(f"/hl7/messages/{pk}", headers=reader).json()["controlId"] == "H1"
    assert is_outcome(http.post("/hl7/messages", content=MSG, headers={**reader, **HL7}), 403)


def test_operator_and_admin_users_run_the_inbox(http: TestClient, smart: Any) -> None:
    pk = submitted(http, smart)
    operator = bearer(user_token(smart, "opal", "operator", "user/*.rs")["access_token"])
    listed = http.get("/hl7/messages", headers=operator)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["messages"]] == [int(pk)]
    # an operator's read-only token does not submit (submission creates resources)
    assert is_outcome(http.post("/hl7/messages", content=MSG, headers={**operator, **HL7}), 403)
    admin = bearer(user_token(smart, "adam", "admin", "user/*.cruds")["access_token"])
    again = MSG.replace(b"|H1|", b"|H2|")
    assert http.post("/hl7/messages", content=again, headers={**admin, **HL7}).status_code == 201


def test_self_registered_app_cannot_give_itself_the_hl7_scope(http: TestClient) -> None:
    response = http.post(
        "/auth/register",
        json={
            "client_name": "sneaky",
            "redirect_uris": ["https://app.example/cb"],
            "scope": "system/hl7.read",
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )
    assert response.status_code == 400


# -- Subscriptions: a client's own, secrets never read back -----------------------------------


def subscription(endpoint: str = "https://a.example/hook", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "off",
        "reason": "lab results",
        "criteria": "Observation?code=1234-5",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "header": [f"Authorization: {SECRET}"],
        },
        **extra,
    }


@pytest.fixture
def owners(http: TestClient, smart: Any) -> dict[str, Any]:
    """Client A owns Subscription/a-sub; client B is another backend with the same scopes."""
    a, a_id, _ = backend(smart, "system/*.cruds")
    b, _, _ = backend(smart, "system/*.cruds")
    response = http.put("/fhir/Subscription/a-sub", json=subscription(id="a-sub"), headers=a)
    assert response.status_code == 201, response.text
    assert SECRET.encode() not in response.content
    return {"a": a, "b": b, "a_id": a_id}


def test_client_cannot_read_another_clients_subscription(
    http: TestClient, owners: dict[str, Any]
) -> None:
    b = owners["b"]
    for url in (
        "Subscription/a-sub",
        "Subscription/a-sub/_history/1",
        "Subscription/a-sub/_history",
    ):
        response = http.get(f"/fhir/{url}", headers=b)
        assert is_outcome(response, 404), (url, response.status_code)
        assert b"a.example" not in response.content
    assert http.get("/fhir/Subscription/a-sub", headers=owners["a"]).status_code == 200


def test_client_cannot_find_another_clients_subscription_by_search_or_history(
    http: TestClient, owners: dict[str, Any]
) -> None:
    b = owners["b"]
    searches = [
        http.get("/fhir/Subscription", headers=b),
        http.get("/fhir/Subscription?_id=a-sub", headers=b),
        http.get("/fhir/Subscription?url=https://a.example/hook", headers=b),
        http.post(
            "/fhir/Subscription/_search",
            content=b"_id=a-sub",
            headers={**b, "Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    for response in searches:
        assert response.status_code == 200 and response.json()["total"] == 0, response.text
    for url in ("/fhir/Subscription/_history", "/fhir/_history"):
        response = http.get(url, headers=b)
        assert response.status_code == 200, response.text
        seen = [e["resource"] for e in response.json().get("entry", []) if "resource" in e]
        assert not [r for r in seen if r["resourceType"] == "Subscription"], url
    mine = http.get("/fhir/Subscription", headers=owners["a"]).json()
    assert [e["resource"]["id"] for e in mine["entry"]] == ["a-sub"]


def test_client_cannot_redirect_another_clients_subscription(
    http: TestClient, owners: dict[str, Any]
) -> None:
    b = owners["b"]
    hijack = subscription("https://attacker.example/steal", id="a-sub")
    assert is_outcome(http.put("/fhir/Subscription/a-sub", json=hijack, headers=b), 404)
    patch = [{"op": "replace", "path": "/channel/endpoint", "value": "https://attacker.example"}]
    patched = http.patch(
        "/fhir/Subscription/a-sub",
        content=orjson.dumps(patch),
        headers={**b, "Content-Type": "application/json-patch+json"},
    )
    assert is_outcome(patched, 404)
    assert is_outcome(http.delete("/fhir/Subscription/a-sub", headers=b), 404)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": hijack, "request": {"method": "PUT", "url": "Subscription/a-sub"}},
        ],
    }
    assert http.post("/fhir", json=bundle, headers=b).status_code == 404
    stored = http.get("/fhir/Subscription/a-sub", headers=owners["a"]).json()
    assert stored["channel"]["endpoint"] == "https://a.example/hook"


def test_conditional_operations_never_match_another_clients_subscription(
    http: TestClient, owners: dict[str, Any]
) -> None:
    b = owners["b"]
    url = "url=https://a.example/hook"
    # conditional update: no match for B, so it creates B's own (not A's overwritten)
    taken = subscription("https://attacker.example/steal")
    response = http.put(f"/fhir/Subscription?{url}", json=taken, headers=b)
    assert response.status_code == 201 and response.json()["id"] != "a-sub"
    # conditional update naming A's id in the body: as unknown as a direct PUT
    named = subscription("https://attacker.example/steal", id="a-sub")
    assert is_outcome(http.put("/fhir/Subscription?_id=a-sub", json=named, headers=b), 404)
    # If-None-Exist: A's subscription is not "existing" for B, and never returned
    created = http.post(
        "/fhir/Subscription",
        json=subscription("https://b.example/hook"),
        headers={**b, "If-None-Exist": "_id=a-sub"},
    )
    assert created.status_code == 201 and created.json()["id"] != "a-sub"
    # conditional patch and delete find nothing
    patch = [{"op": "replace", "path": "/status", "value": "off"}]
    patched = http.patch(
        "/fhir/Subscription?_id=a-sub",
        content=orjson.dumps(patch),
        headers={**b, "Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 404
    assert http.delete("/fhir/Subscription?_id=a-sub", headers=b).status_code == 204
    # the same inside a transaction
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": subscription("https://attacker.example/steal"),
                "request": {"method": "PUT", "url": f"Subscription?{url}"},
            },
            {
                "resource": subscription("https://b.example/hook"),
                "request": {"method": "POST", "url": "Subscription", "ifNoneExist": "_id=a-sub"},
            },
        ],
    }
    done = http.post("/fhir", json=bundle, headers=b)
    assert done.status_code == 200, done.text
    statuses = [e["response"]["status"] for e in done.json()["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    stored = http.get("/fhir/Subscription/a-sub", headers=owners["a"])
    assert stored.status_code == 200
    assert stored.json()["channel"]["endpoint"] == "https://a.example/hook"


def test_subscription_header_secrets_are_never_read_back(
    http: TestClient, owners: dict[str, Any]
) -> None:
    a = owners["a"]
    responses = [
        http.get("/fhir/Subscription/a-sub", headers=a),
        http.get("/fhir/Subscription/a-sub/_history/1", headers=a),
        http.get("/fhir/Subscription/a-sub/_history", headers=a),
        http.get("/fhir/Subscription/_history", headers=a),
        http.get("/fhir/_history", headers=a),
        http.get("/fhir/Subscription?_id=a-sub", headers=a),
        http.post(
            "/fhir",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": subscription(id="t-sub"),
                        "request": {"method": "PUT", "url": "Subscription/t-sub"},
                    }
                ],
            },
            headers={**a, "Prefer": "return=representation"},
        ),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        assert b"a-sub" in response.content or b"t-sub" in response.content
        assert b"s3cr3t" not in response.content, response.request.url
    read = responses[0].json()
    assert read["channel"]["header"] == ["Authorization: [redacted]"]


def test_bulk_export_shows_only_own_subscriptions_without_secrets(
    http: TestClient, owners: dict[str, Any], smart: Any
) -> None:
    b = owners["b"]
    http.put("/fhir/Subscription/b-sub", json=subscription(id="b-sub"), headers=b)
    kick = http.get("/fhir/$export?_type=Subscription", headers={**b, "Prefer": "respond-async"})
    assert kick.status_code == 202, kick.text
    status = kick.headers["Content-Location"].removeprefix("http://testserver")
    deadline = time.monotonic() + 30
    while (polled := http.get(status, headers=b)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert polled.status_code == 200, polled.text
    lines = []
    for output in polled.json()["output"]:
        url = output["url"].removeprefix("http://testserver")
        lines += http.get(url, headers=b).content.splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["b-sub"]
    assert all(b"s3cr3t" not in line for line in lines)


def test_delivery_still_sends_the_secret_header_after_a_read_modify_write(
    http: TestClient, smart: Any
) -> None:
    """The secret stays usable: a client PUTs back what it read (values redacted) and the
    notification still carries the original credential; the stored resource never does."""
    receiver = Receiver()
    receiver.start()
    try:
        a, _, _ = backend(smart, "system/*.cruds")
        body = subscription(receiver.url, id="live")
        body["status"] = "requested"
        assert http.put("/fhir/Subscription/live", json=body, headers=a).status_code == 201
        eventually(
            lambda: http.get("/fhir/Subscription/live", headers=a).json()["status"] == "active"
        )
        read = http.get("/fhir/Subscription/live", headers=a).json()
        read["reason"] = "changed reason"
        read.pop("meta")
        assert http.put("/fhir/Subscription/live", json=read, headers=a).status_code == 200
        eventually(
            lambda: http.get("/fhir/Subscription/live", headers=a).json()["status"] == "active"
        )
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        }
        assert http.post("/fhir/Observation", json=observation, headers=a).status_code == 201
        eventually(lambda: any(r.headers.get("authorization") == SECRET and r.body
                               for r in receiver.received))  # fmt: skip
        assert all(r.headers.get("authorization") == SECRET for r in receiver.received)
    finally:
        receiver.stop()


# -- $bulk-upload ------------------------------------------------------------------------------


NDJSON = {"Content-Type": "application/fhir+ndjson"}
LINE = b'{"resourceType":"Patient","name":[{"family":"Uploaded"}]}\n'


def test_patient_app_cannot_store_bulk_uploads(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    app = patient_app(smart, two_patients["A"], "patient/*.cruds")
    assert is_outcome(http.post("/fhir/$bulk-upload", content=LINE, headers={**app, **NDJSON}), 403)


def test_clinician_and_read_only_backend_cannot_store_bulk_uploads(
    http: TestClient, smart: Any
) -> None:
    doctor = bearer(user_token(smart, "dora", "physician", "user/*.cruds")["access_token"])
    reader, _, _ = backend(smart, "system/*.rs")
    for caller in (doctor, reader):
        response = http.post("/fhir/$bulk-upload", content=LINE, headers={**caller, **NDJSON})
        assert is_outcome(response, 403)


def test_backend_with_import_permission_may_upload(http: TestClient, smart: Any) -> None:
    importer, _, _ = backend(smart, "system/Patient.cu")
    response = http.post("/fhir/$bulk-upload", content=LINE, headers={**importer, **NDJSON})
    assert response.status_code == 201, response.text


# -- introspection and revocation ---------------------------------------------------------------


def test_patient_app_bearer_token_cannot_introspect_a_clinicians_token(
    http: TestClient, smart: Any, two_patients: dict[str, str]
) -> None:
    doctor = user_token(smart, "dora", "physician", "user/*.rs")["access_token"]
    app = patient_app(smart, two_patients["A"])
    response = http.post("/auth/introspect", data={"token": doctor}, headers=app)
    assert response.status_code == 401
    assert "scope" not in response.json()


def test_public_client_cannot_introspect(http: TestClient, smart: Any) -> None:
    body = user_token(smart, "dora", "physician", "user/*.rs")
    response = http.post(
        "/auth/introspect", data={"token": body["access_token"], "client_id": body["client_id"]}
    )
    assert response.status_code == 401


def test_confidential_client_cannot_introspect_another_clients_token(
    http: TestClient, smart: Any
) -> None:
    doctor = user_token(smart, "dora", "physician", "user/*.rs")["access_token"]
    own, client_id, secret = backend(smart, "system/*.rs")
    foreign = http.post("/auth/introspect", data={"token": doctor}, auth=(client_id, secret))
    assert foreign.status_code == 200 and foreign.json() == {"active": False}
    mine = own["Authorization"].split()[1]
    answer = http.post("/auth/introspect", data={"token": mine}, auth=(client_id, secret)).json()
    assert answer["active"] is True and answer["client_id"] == client_id
    wrong = http.post("/auth/introspect", data={"token": mine}, auth=(client_id, "not-it"))
    assert wrong.status_code == 401


def test_designated_resource_server_may_introspect_any_token(http: TestClient, smart: Any) -> None:
    doctor = user_token(smart, "dora", "physician", "user/*.rs")
    rs_id, rs_secret = smart.client("system/token.introspect", "confidential-secret")
    answer = http.post(
        "/auth/introspect", data={"token": doctor["access_token"]}, auth=(rs_id, rs_secret)
    ).json()
    assert answer["active"] is True and answer["client_id"] == doctor["client_id"]


def test_client_cannot_revoke_another_clients_token(http: TestClient, smart: Any) -> None:
    victim, _, _ = backend(smart, "system/*.rs")
    _, attacker_id, attacker_secret = backend(smart, "system/*.rs")
    token = victim["Authorization"].split()[1]
    assert http.post("/auth/revoke", data={"token": token}).status_code == 401
    response = http.post("/auth/revoke", data={"token": token}, auth=(attacker_id, attacker_secret))
    assert response.status_code == 200  # RFC 7009: no hint about someone else's token
    assert http.get("/fhir/Patient", headers=victim).status_code == 200
