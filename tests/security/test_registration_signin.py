"""Class 6 of the threat model: registration and sign-in.

An attacker registers an app that looks official, floods registration, asks a self-registered
app for wide scopes, guesses passwords, frames the sign-in pages, or posts the forms from
another site. Each test is one such attack, over HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_support import BASE, PASSWORD, REDIRECT, Browser, csrf_of
from sqlalchemy import select, update
from starlette.testclient import TestClient
from store_support import clear_tables

from fhir_server.api.bundles import apply_transaction
from interop.app import create_app
from interop.settings import Settings
from smart_auth.models import users

EMR = "https://emr.example"
LOCKOUT, LONGEST = 3, 6  # long enough that a loaded CI machine still answers inside one


@pytest.fixture(scope="module")
def guarded_app(database_url: str):  # type: ignore[no-untyped-def]
    app = create_app(
        Settings(
            database_url=database_url,
            auth="on",
            base_url=BASE,
            auth_login_lockout_seconds=LOCKOUT,
            auth_login_max_lockout_seconds=LONGEST,
            auth_registration_per_address=10,
            auth_registration_per_hour=15,
            openemr_frame_origins=[EMR],
        )
    )
    yield app
    app.state.store.engine.dispose()


@pytest.fixture
def browser(guarded_app: Any) -> Iterator[Browser]:
    clear_tables(guarded_app.state.store.engine, keep={"auth_signing_keys"})
    with TestClient(guarded_app, base_url="http://testserver") as http:
        yield Browser(http, guarded_app)


def operator_client(browser: Browser, name: str = "Test app", scope: str = "") -> str:
    client, _ = browser.registry.add_client(
        name=name,
        client_type="public",
        redirect_uris=[REDIRECT],
        scope=scope or "openid fhirUser launch launch/patient launch/encounter patient/*.rs",
    )
    return str(client.client_id)


def register(http: TestClient, **metadata: Any) -> Any:
    body = {
        "client_name": "Some app",
        "redirect_uris": ["https://evil.example/cb"],
        "token_endpoint_auth_method": "none",
        "scope": "openid patient/*.rs",
        **metadata,
    }
    return http.post("/auth/register", json=body)


# -- registration ---------------------------------------------------------------------------


def test_impersonating_registration_is_refused_or_shown_unverified_with_its_redirect_host(
    browser: Browser,
) -> None:
    operator_client(browser, "OpenEMR Official Patient Portal")
    for copy in ("OpenEMR Official Patient Portal", "openemr official patient-portal "):
        refused = register(browser.http, client_name=copy)
        assert refused.status_code == 400, copy
        assert "administrator registered" in refused.json()["error_description"]
    evil = REDIRECT.replace("app.example", "evil.example")
    lookalike = register(
        browser.http, client_name="OpenEMR Official Patient Portal (new)", redirect_uris=[evil]
    )
    assert lookalike.status_code == 201, lookalike.text
    browser.registry.add_user("pat", PASSWORD, "patient", "Patient/p1")
    page = browser.login_page(lookalike.json()["client_id"], redirect_uri=evil)
    assert "Unverified app" in page.text and "evil.example" in page.text
    signed_in = browser.sign_in(page, "pat")
    consent = browser.http.get("/auth/" + signed_in.headers["location"])
    assert consent.status_code == 200
    assert "Unverified app" in consent.text
    assert "registered itself" in consent.text
    assert "<strong>evil.example</strong>" in consent.text
    # the operator's own app is not flagged
    official = browser.login_page(operator_client(browser, "Clinic app"))
    assert "Unverified" not in official.text and "app.example" in official.text


def test_redirect_uri_hiding_its_host_behind_a_user_name_is_refused(browser: Browser) -> None:
    hidden = register(browser.http, redirect_uris=["https://openemr.org@evil.example/cb"])
    assert hidden.status_code == 400


def test_fifty_quick_registrations_get_429_after_the_limit(browser: Browser) -> None:
    statuses = [register(browser.http, client_name=f"app {i}") for i in range(50)]
    codes = [r.status_code for r in statuses]
    assert codes[:10] == [201] * 10
    assert set(codes[10:]) == {429}
    assert 0 < int(statuses[-1].headers["retry-after"]) <= 3600
    # the global limit (15 an hour) holds across addresses
    with TestClient(browser.app, client=("203.0.113.9", 4000)) as other:
        more = [register(other, client_name=f"other {i}").status_code for i in range(10)]
    assert more[:5] == [201] * 5 and set(more[5:]) == {429}


def test_registration_needs_the_initial_access_token_when_configured(
    database_url: str, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "registration-tokens"
    token_file.write_text(f"{token}\n")
    settings = Settings(
        database_url=database_url,
        auth="on",
        base_url=BASE,
        auth_registration="token",
        auth_registration_token_file=str(token_file),
    )
    app = create_app(settings)
    clear_tables(app.state.store.engine, keep={"auth_signing_keys"})
    try:
        with TestClient(app) as http:
            missing = register(http)
            assert missing.status_code == 401
            assert missing.json()["error"] == "invalid_token"
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = http.post(
                "/auth/register",
                json={"client_name": "x", "redirect_uris": [REDIRECT], "scope": "openid"},
                headers={
                    "Authorization": f"Bearer {token[:-1]}{'y' if token.endswith('x') else 'x'}"
                },
            )
            assert wrong.status_code == 401
            right = http.post(
                "/auth/register",
                json={
                    "client_name": "Vetted app",
                    "redirect_uris": [REDIRECT],
                    "scope": "openid",
                    "token_endpoint_auth_method": "none",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert right.status_code == 201, right.text
    finally:
        app.state.store.engine.dispose()
    without_file = Settings(database_url=database_url, base_url=BASE, auth_registration="token")
    with pytest.raises(ValueError, match="INTEROP_AUTH_REGISTRATION_TOKEN_FILE"):
        create_app(without_file)


def test_self_registered_app_asking_user_cruds_offline_access_is_refused_or_cut_down(
    browser: Browser,
) -> None:
    greedy = register(browser.http, scope="user/*.cruds offline_access")
    assert greedy.status_code == 400
    assert "may be self-registered" in greedy.json()["error_description"]
    mixed = register(browser.http, scope="openid user/*.cruds offline_access patient/*.cruds")
    assert mixed.status_code == 201  # patient/*.cruds is not within patient/*.rs either
    assert mixed.json()["scope"] == "openid"
    cut = register(browser.http, scope="openid user/*.cruds offline_access patient/*.rs")
    assert cut.status_code == 201
    assert cut.json()["scope"] == "openid patient/*.rs"
    assert "refresh_token" not in cut.json()["grant_types"]
    for metadata in (
        {"scope": "system/*.rs"},
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://evil.example/k"},
        {"jwks": {"keys": [{"kty": "oct", "kid": "a", "k": "AA"}]}},
    ):
        assert register(browser.http, **metadata).status_code == 400, metadata
    # the app cannot reach for more later, at the authorization endpoint
    asked = browser.authorize(
        cut.json()["client_id"],
        "user/*.cruds offline_access",
        redirect_uri=cut.json()["redirect_uris"][0],
    )
    assert asked.status_code == 302 and "invalid_scope" in asked.headers["location"]


# -- sign-in --------------------------------------------------------------------------------


def test_thirty_wrong_passwords_lock_the_user_and_the_right_one_is_refused_in_the_lockout(
    browser: Browser,
) -> None:
    client_id = operator_client(browser)
    browser.registry.add_user("alice", PASSWORD, "physician", "Practitioner/p1")
    answers = [browser.attempt(client_id, "alice", f"guess-{i}") for i in range(30)]
    codes = [a.status_code for a in answers]
    assert codes[:4] == [401] * 4
    assert set(codes[4:]) == {429}, codes
    assert "Too many failed sign-ins" in answers[-1].text
    during = browser.attempt(client_id, "alice", PASSWORD)
    assert during.status_code == 429  # the right password does not get through a lockout
    time.sleep(int(during.headers["retry-after"]) + 0.2)
    after = browser.attempt(client_id, "alice", PASSWORD)
    assert after.status_code == 303, after.text
    # the success reset the user's counter: the next mistake is a plain wrong password
    assert browser.attempt(client_id, "alice", "typo").status_code == 401


def test_unknown_user_gets_the_same_answers_as_a_known_one(browser: Browser) -> None:
    client_id = operator_client(browser)
    browser.registry.add_user("alice", PASSWORD, "physician", "Practitioner/p1")

    def run(username: str) -> tuple[list[int], list[str], list[float]]:
        codes, errors, times = [], [], []
        for i in range(7):
            page = browser.login_page(client_id)
            started = time.perf_counter()
            answer = browser.sign_in(page, username, f"guess-{i}")
            times.append(time.perf_counter() - started)
            codes.append(answer.status_code)
            errors.append(re.sub(r"\d+ seconds", "N seconds", _error(answer.text)))
        return codes, errors, times

    known, unknown = run("alice"), run("nobody-here")
    assert known[0] == unknown[0] == [401] * 4 + [429] * 3
    assert known[1] == unknown[1]
    # comparable timing: an unknown name is hashed against a dummy hash, not answered at once
    assert statistics.median(unknown[2][:4]) > 0.3 * statistics.median(known[2][:4])


def test_guessing_many_user_names_from_one_address_is_throttled(browser: Browser) -> None:
    client_id = operator_client(browser)
    browser.registry.add_user("zed", PASSWORD, "physician", "Practitioner/p1")
    codes = [browser.attempt(client_id, f"user{i}", "guess").status_code for i in range(20)]
    assert codes[:19] == [401] * 19 and codes[19] == 429
    assert browser.attempt(client_id, "zed", PASSWORD).status_code == 429
    with TestClient(browser.app, client=("198.51.100.7", 4000)) as elsewhere:
        other = Browser(elsewhere, browser.app)
        assert other.attempt(client_id, "zed", PASSWORD).status_code == 303


def _error(html: str) -> str:
    match = re.search(r'<p class="error">([^<]*)</p>', html)
    return match.group(1) if match else ""


# -- framing and CSRF -----------------------------------------------------------------------


def _walk_to_every_page(browser: Browser) -> dict[str, Any]:
    """login, picker, encounter and consent pages of one standalone launch."""
    ctx = browser.app.state.context
    apply_transaction(
        ctx,
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000001",
                    "resource": {"resourceType": "Patient", "name": [{"family": "Doe"}]},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {
                        "resourceType": "Encounter",
                        "status": "finished",
                        "class": {"code": "AMB"},
                        "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"},
                    },
                    "request": {"method": "POST", "url": "Encounter"},
                },
            ],
        },
    )
    client_id = operator_client(browser)
    browser.registry.add_user("alice", PASSWORD, "physician", "Practitioner/p1")
    pages: dict[str, Any] = {}
    login = browser.login_page(client_id, "openid launch/patient launch/encounter patient/*.rs")
    pages["login"] = login
    signed_in = browser.sign_in(login, "alice")
    pages["pick"] = browser.http.get("/auth/" + signed_in.headers["location"])
    patient = re.findall(r'name="patient" value="([^"]+)"', pages["pick"].text)[0]
    data = {"request": login.request_id, "csrf": csrf_of(pages["pick"].text), "patient": patient}
    picked = browser.http.post("/auth/pick", data=data, follow_redirects=False)
    pages["encounter"] = browser.http.get("/auth/" + picked.headers["location"])
    encounter = re.findall(r'name="encounter" value="([^"]+)"', pages["encounter"].text)[0]
    data = {"request": login.request_id, "csrf": csrf_of(login.text), "encounter": encounter}
    chosen = browser.http.post("/auth/encounter", data=data, follow_redirects=False)
    pages["consent"] = browser.http.get("/auth/" + chosen.headers["location"])
    pages["manage"] = browser.http.get("/auth/manage")
    pages["error"] = browser.http.get("/auth/consent?request=gone")
    return pages


def test_login_picker_encounter_consent_and_manage_pages_cannot_be_framed(
    browser: Browser,
) -> None:
    for name, page in _walk_to_every_page(browser).items():
        csp = page.headers["content-security-policy"]
        assert csp.startswith("frame-ancestors 'none';"), (name, csp)
        assert page.headers["x-frame-options"] == "DENY", name


def test_pages_of_an_ehr_launch_may_be_framed_by_exactly_the_ehr(browser: Browser) -> None:
    client_id = operator_client(browser)
    launch, _ = browser.app.state.auth.create_launch(client_id, "p1")
    page = browser.login_page(client_id, "launch openid patient/*.rs", launch=launch)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp.split(";")[0] == f"frame-ancestors {EMR}"
    assert "x-frame-options" not in page.headers
    bridge = browser.http.get("/openemr/launch", params={"iss": "x", "launch": "y"})
    assert bridge.headers["content-security-policy"].split(";")[0] == f"frame-ancestors {EMR}"


def test_form_posts_without_or_with_a_wrong_csrf_token_are_refused(browser: Browser) -> None:
    client_id = operator_client(browser)
    browser.registry.add_user("alice", PASSWORD, "physician", "Practitioner/p1")
    login = browser.login_page(client_id)
    good = csrf_of(login.text)
    fields = {
        "/auth/login": {"username": "alice", "password": PASSWORD},
        "/auth/pick": {"patient": "p1"},
        "/auth/encounter": {"encounter": ""},
        "/auth/consent": {"decision": "allow", "scope": "openid"},
    }
    for path, form in fields.items():
        for csrf in (None, "", "wrong", good[:-1] + ("A" if good[-1] != "A" else "B")):
            data = {"request": login.request_id, **form}
            if csrf is not None:
                data["csrf"] = csrf
            refused = browser.http.post(path, data=data, follow_redirects=False)
            assert refused.status_code == 403, (path, csrf, refused.text)
            assert "CSRF" in refused.text and "could not be verified" in refused.text
    # the right token from another browser (no cookie) is refused as well
    with TestClient(browser.app) as other:
        data = {"request": login.request_id, "csrf": good, "username": "alice"}
        stolen = other.post("/auth/login", data={**data, "password": PASSWORD})
        assert stolen.status_code == 403
    # and the real form still works
    assert browser.sign_in(login, "alice").status_code == 303


# -- password hashes ------------------------------------------------------------------------


def test_new_password_hashes_are_argon2id_and_scrypt_hashes_upgrade_at_sign_in(
    browser: Browser,
) -> None:
    client_id = operator_client(browser)
    browser.registry.add_user("new", PASSWORD, "physician", "Practitioner/p1")
    browser.registry.add_user("old", "placeholder-pw", "physician", "Practitioner/p2")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = (
        f"scrypt${2**14}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )
    engine = browser.app.state.store.engine
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "old").values(password_hash=legacy))

    def stored(name: str) -> str:
        with engine.connect() as conn:
            return str(
                conn.execute(
                    select(users.c.password_hash).where(users.c.username == name)
                ).scalar_one()
            )

    assert stored("new").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert browser.attempt(client_id, "old", "wrong password").status_code == 401
    assert stored("old") == legacy  # a wrong password changes nothing
    assert browser.attempt(client_id, "old", PASSWORD).status_code == 303
    assert stored("old").startswith("$argon2id$")
    assert browser.attempt(client_id, "old", PASSWORD).status_code == 303
