"""Shared by the console tests (tests/console) and its refusal tests (tests/security): an app
with auth on (per database), users of each role, a browser-like client signed in through
/console/login, and HL7 messages stored through the real processor.

A module of its own at the top of tests/ (like store_support), so both folders import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient
from store_support import clear_tables

from interop.app import create_app
from interop.settings import Settings


@dataclass
class ConsoleUser:
    username: str
    password: str
    role: str


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(http: TestClient, user: ConsoleUser, password: str | None = None) -> Any:
    page = http.get("/console/login")
    assert page.status_code == 200
    return http.post(
        "/console/login",
        data={
            "csrf": csrf_of(page.text),
            "username": user.username,
            "password": password or user.password,
            "next": "/console/dashboard",
        },
        follow_redirects=False,
    )


def adt(control_id: str, mrn: str, family: str, given: str = "Ada", sender: str = "LAB",
        event: str = "A01", extra: str = "") -> bytes:  # fmt: skip
    """An ADT message of one patient; `extra` adds segments (e.g. an OBX with a word)."""
    segments = [
        f"MSH|^~\\&|{sender}|HOSP|INTEROP|HOSP|20260131080000||ADT^{event}|{control_id}|P|2.5.1",
        f"EVN|{event}|20260131080000",
        f"PID|1||{mrn}^^^HOSP^MR||{family}^{given}||19700101|F",
        "PV1|1|I",
    ]
    if extra:
        segments.append(extra)
    return ("\r".join(segments) + "\r").encode()


def store(app: Any, raw: bytes) -> int:
    """The message through the real HL7 processor (stored, mapped, acknowledged)."""
    reply = app.state.hl7.handle(raw, "test")
    assert reply.pk is not None
    return int(reply.pk)


BASE = "http://testserver/fhir"


@pytest.fixture(scope="session")
def console_session_app(database_url: str):  # type: ignore[no-untyped-def]
    app = create_app(Settings(database_url=database_url, auth="on", base_url=BASE))
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def console_app(console_session_app: Any) -> Any:
    clear_tables(console_session_app.state.store.engine, keep={"auth_signing_keys"})
    return console_session_app


@pytest.fixture
def users(console_app: Any) -> dict[str, ConsoleUser]:
    registry = console_app.state.auth.registry
    made = {}
    for name, role, fhir_user in (
        ("olga", "operator", None), ("ada", "admin", None),
        ("phil", "physician", "Practitioner/p1"), ("pat", "patient", "Patient/p1"),
    ):  # fmt: skip
        registry.add_user(name, "console-password-1", role, fhir_user)
        made[role] = ConsoleUser(name, "console-password-1", role)
    return made


@pytest.fixture
def operator(console_app: Any, users: dict[str, ConsoleUser]) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        sign_in(http, users["operator"])
        yield http


@pytest.fixture
def admin(console_app: Any, users: dict[str, ConsoleUser]) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        sign_in(http, users["admin"])
        yield http


@pytest.fixture
def anonymous(console_app: Any) -> Iterator[TestClient]:
    with TestClient(console_app, base_url="http://testserver") as http:
        yield http
