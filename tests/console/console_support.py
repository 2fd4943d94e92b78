"""Helpers for the console tests: signing in like a browser, reading a form's CSRF token,
and storing HL7 messages through the real processor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.testclient import TestClient


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
