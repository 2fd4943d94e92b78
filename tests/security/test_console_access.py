"""Refusals of the operator console (/console): only a console session of an admin or
operator opens it; administration is for admins; a SMART access token opens nothing; every
POST needs the session's CSRF token; the sign-in is throttled like the SMART login."""

# ruff: noqa: F811 - the fixtures imported from console_support are parameters by name

from __future__ import annotations

from typing import Any

from console_support import (  # noqa: F401 - fixtures
    ConsoleUser,
    admin,
    anonymous,
    console_app,
    console_session_app,
    csrf_of,
    operator,
    sign_in,
    users,
)
from starlette.testclient import TestClient

PAGES = ["/console", "/console/dashboard", "/console/dashboard/figures", "/console/messages",
         "/console/messages/1", "/console/messages/export", "/console/fhir",
         "/console/fhir/Patient", "/console/fhir/Patient/p1", "/console/admin",
         "/console/admin/audit"]  # fmt: skip
ACTIONS = ["/console/messages/1/replay", "/console/messages/replay", "/console/admin/clients",
           "/console/admin/users", "/console/admin/keys/rotate", "/console/logout",
           "/console/admin/users/olga/remove", "/console/admin/clients/x/revoke"]  # fmt: skip
ADMIN_ONLY = ["/console/admin", "/console/admin/audit"]
ADMIN_ACTIONS = ["/console/admin/clients", "/console/admin/users", "/console/admin/keys/rotate",
                 "/console/admin/users/ada/remove", "/console/admin/users/olga/role"]  # fmt: skip


def test_anonymous_is_sent_to_sign_in(anonymous: TestClient) -> None:
    for path in PAGES:
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/login?next="), path
    for path in ACTIONS:
        answer = anonymous.post(path, data={"csrf": "x"}, follow_redirects=False)
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]


def test_a_smart_token_opens_nothing(console_app: Any, anonymous: TestClient) -> None:
    """A patient app's token, and even an admin user's or a backend's token: the console
    looks at its own session only."""
    server = console_app.state.auth
    tokens = [
        server.tokens.access_token(client_id="app", subject="pat", scope="patient/*.rs",
                                   lifetime=300, context={"patient": "p1", "role": "patient"}),
        server.tokens.access_token(client_id="app", subject="ada", scope="user/*.cruds",
                                   lifetime=300, context={"role": "admin"}),
        server.tokens.access_token(client_id="etl", subject="etl", scope="system/*.rs",
                                   lifetime=300),
    ]  # fmt: skip
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        for path in PAGES:
            answer = anonymous.get(path, headers=headers, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/login")


def test_operator_cannot_open_administration(
    console_app: Any, operator: TestClient, users: dict[str, ConsoleUser]
) -> None:
    page = operator.get("/console/dashboard")
    assert page.status_code == 200 and "/console/admin" not in page.text  # no link either
    csrf = csrf_of(page.text)
    for path in ADMIN_ONLY:
        assert operator.get(path).status_code == 403, path
    before = console_app.state.auth.registry.users()
    for path in ADMIN_ACTIONS:
        answer = operator.post(
            path,
            data={
                "csrf": csrf,
                "username": "x",
                "password": "y" * 9,
                "role": "admin",
                "name": "n",
                "scope": "s",
            },
        )
        assert answer.status_code == 403, path
    assert console_app.state.auth.registry.users() == before
    assert console_app.state.auth.registry.user("olga").role == "operator"


def test_other_roles_cannot_sign_in(console_app: Any, users: dict[str, ConsoleUser]) -> None:
    for role in ("physician", "patient"):
        with TestClient(console_app, base_url="http://testserver") as http:
            answer = sign_in(http, users[role])
            assert answer.status_code == 403 and "role admin or operator" in answer.text
            assert http.get("/console/dashboard", follow_redirects=False).status_code == 303


def test_a_demoted_user_loses_the_console_at_once(console_app: Any, operator: TestClient) -> None:
    assert operator.get("/console/messages").status_code == 200
    console_app.state.auth.registry.set_role("olga", "nurse")
    assert operator.get("/console/messages").status_code == 403


def test_post_without_the_csrf_token_is_refused(console_app: Any, admin: TestClient) -> None:
    other = admin.get("/console/admin")
    assert other.status_code == 200
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}):
        answer = admin.post(
            "/console/admin/users",
            data={**data, "username": "mallory", "password": "password123", "role": "admin"},
        )
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert console_app.state.auth.registry.user("mallory") is None
    # a token from another session does not do either
    with TestClient(console_app, base_url="http://testserver") as second:
        sign_in(second, ConsoleUser("ada", "console-password-1", "admin"))
        stolen = csrf_of(second.get("/console/admin").text)
    answer = admin.post("/console/admin/keys/rotate", data={"csrf": stolen})
    assert answer.status_code == 403


def test_sign_in_form_needs_its_csrf_cookie(
    console_app: Any, users: dict[str, ConsoleUser]
) -> None:
    with TestClient(console_app, base_url="http://testserver") as http:
        page = http.get("/console/login")
        http.cookies.clear()  # a form posted from another site carries no cookie of ours
        answer = http.post("/console/login", data={
            "csrf": csrf_of(page.text), "username": "olga", "password": "console-password-1"},
            follow_redirects=False)  # fmt: skip
        assert answer.status_code == 403 and "CSRF" in answer.text
        assert http.get("/console/dashboard", follow_redirects=False).status_code == 303


def test_wrong_passwords_are_throttled(console_app: Any, users: dict[str, ConsoleUser]) -> None:
    with TestClient(console_app, base_url="http://testserver") as http:
        statuses = [sign_in(http, users["operator"], "wrong").status_code for _ in range(8)]
        assert statuses[0] == 401 and statuses[-1] == 429
        locked = sign_in(http, users["operator"])  # the right password, during the lockout
        assert locked.status_code == 429 and "Retry-After" in locked.headers


def test_sign_in_goes_only_to_console_pages(
    console_app: Any, users: dict[str, ConsoleUser]
) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/auth/token", "/console\\@x"):
        with TestClient(console_app, base_url="http://testserver") as http:
            page = http.get("/console/login")
            answer = http.post(
                "/console/login",
                data={
                    "csrf": csrf_of(page.text),
                    "username": "olga",
                    "password": "console-password-1",
                    "next": target,
                },
                follow_redirects=False,
            )
            assert answer.status_code == 303
            assert answer.headers["location"] == "/console/dashboard", target


def test_pages_cannot_be_framed_and_load_nothing_from_elsewhere(operator: TestClient) -> None:
    page = operator.get("/console/dashboard")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "http://" not in page.text.replace("http://testserver", "")
    assert "https://" not in page.text


def test_session_cookie_is_scoped(console_app: Any, users: dict[str, ConsoleUser]) -> None:
    with TestClient(console_app, base_url="http://testserver") as http:
        answer = sign_in(http, users["operator"])
        cookie = answer.headers["set-cookie"]
        assert "interop_console=" in cookie and "HttpOnly" in cookie
        assert "Path=/console" in cookie and "SameSite=strict" in cookie
        # signed out: the same cookie opens nothing any more
        token = http.cookies.get("interop_console")
        page = http.get("/console/dashboard")
        http.post("/console/logout", data={"csrf": csrf_of(page.text)})
        http.cookies.set("interop_console", token or "", path="/console")
        assert http.get("/console/dashboard", follow_redirects=False).status_code == 303
