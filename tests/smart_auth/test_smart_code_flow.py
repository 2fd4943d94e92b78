"""The authorization code flow, driven over HTTP through the real login and consent pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from smart_auth.server import s256

BASE = "http://testserver/fhir"
REDIRECT = "https://app.example/callback"
SCOPE = "openid fhirUser offline_access user/Patient.rs user/Observation.rs"


def redirected_error(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return parse_qs(urlsplit(location).query)


def test_full_flow_gives_token_id_token_and_refresh(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(SCOPE)
    smart.user("alice", "physician", "Practitioner/p1")
    body = smart.code_flow(client_id, SCOPE)
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
    assert body["scope"].split() == SCOPE.split()
    assert body["refresh_token"]
    keys = KeySet.import_key_set(http.get("/auth/jwks").json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert id_token["iss"] == BASE and id_token["aud"] == client_id
    assert id_token["sub"] == "alice"
    assert id_token["fhirUser"] == f"{BASE}/Practitioner/p1"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get("/fhir/Patient", headers=auth).status_code == 200


def test_token_response_is_not_cached(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    start = smart.authorize(client_id, "user/*.rs")
    done = smart.consent(smart.login(start))
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": start.verifier,
        "client_id": client_id,
    }
    response = http.post("/auth/token", data=form)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    again = http.post("/auth/token", data=form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_consent_can_deselect_scopes(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(SCOPE)
    smart.user()
    body = smart.code_flow(client_id, SCOPE, keep=["user/Patient.rs"])
    assert body["scope"] == "user/Patient.rs"
    assert "refresh_token" not in body and "id_token" not in body


def test_denied_consent_returns_access_denied(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    done = smart.consent(smart.login(smart.authorize(client_id, "user/*.rs")), decision="deny")
    query = redirected_error(done)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"]


def test_wrong_password_shows_the_form_again(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    response = smart.login(smart.authorize(client_id, "user/*.rs"), password="wrong-password")
    assert response.status_code == 401 and "Wrong user name or password" in response.text


def test_login_without_csrf_cookie_is_refused(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    start = smart.authorize(client_id, "user/*.rs")
    request_id = parse_qs(urlsplit(start.headers["location"]).query)["request"][0]
    http.get("/auth/login?request=" + request_id)
    http.cookies.clear()
    response = http.post(
        "/auth/login",
        data={"request": request_id, "csrf": "guess", "username": "alice", "password": "x" * 10},
    )
    assert response.status_code == 403


def test_pkce_is_required_and_plain_refused(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    missing = redirected_error(smart.authorize(client_id, "user/*.rs", code_challenge=None))
    assert missing["error"] == ["invalid_request"]
    plain = redirected_error(smart.authorize(client_id, "user/*.rs", code_challenge_method="plain"))
    assert plain["error"] == ["invalid_request"] and plain["state"] == ["st-123"]


def _code(smart, client_id: str):  # type: ignore[no-untyped-def]
    start = smart.authorize(client_id, "user/*.rs")
    done = smart.consent(smart.login(start))
    return parse_qs(urlsplit(done.headers["location"]).query)["code"][0], start.verifier


def test_bad_pkce_verifiers_are_refused(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    for wrong in (None, "", "x" * 50, "the challenge itself"):
        code, verifier = _code(smart, client_id)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
        }
        if wrong == "the challenge itself":
            form["code_verifier"] = s256(verifier)
        elif wrong is not None:
            form["code_verifier"] = wrong
        response = http.post("/auth/token", data=form)
        assert response.status_code == 400, wrong
        assert response.json()["error"] == "invalid_grant"


def test_wrong_aud_issues_no_code(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    query = redirected_error(smart.authorize(client_id, "user/*.rs", aud="https://evil/fhir"))
    assert query["error"] == ["invalid_request"] and "code" not in query


def test_unregistered_redirect_uri_is_never_redirected_to(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    response = smart.authorize(client_id, "user/*.rs", redirect_uri=REDIRECT + "/other")
    assert response.status_code == 400 and "location" not in response.headers


def test_redirect_uri_must_match_at_the_token_endpoint(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.rs")
    smart.user()
    code, verifier = _code(smart, client_id)
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "redirect_uri": "https://app.example/other",
            "code_verifier": verifier,
        },
    )
    assert response.json()["error"] == "invalid_grant"


def test_scopes_outside_the_registration_are_dropped(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/Patient.rs")
    smart.user()
    body = smart.code_flow(client_id, "user/Patient.rs user/Observation.cruds system/*.rs")
    assert body["scope"] == "user/Patient.rs"


def test_v1_scopes_come_back_as_v1(smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client("user/*.read")
    smart.user()
    assert smart.code_flow(client_id, "user/Patient.read")["scope"] == "user/Patient.read"


def _refresh(http: TestClient, client_id: str, token: str, scope: str | None = None):  # type: ignore[no-untyped-def]
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    if scope:
        form["scope"] = scope
    return http.post("/auth/token", data=form)


def test_refresh_rotates_and_reuse_revokes_the_family(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(SCOPE)
    smart.user()
    first = smart.code_flow(client_id, SCOPE)["refresh_token"]
    second = _refresh(http, client_id, first)
    assert second.status_code == 200
    newer = second.json()["refresh_token"]
    assert newer != first
    reused = _refresh(http, client_id, first)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # the thief's replay also ended the legitimate holder's newer token
    assert _refresh(http, client_id, newer).json()["error"] == "invalid_grant"


def test_refresh_can_narrow_but_not_widen(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(SCOPE + " user/Encounter.rs")
    smart.user()
    token = smart.code_flow(client_id, SCOPE)["refresh_token"]
    wider = _refresh(http, client_id, token, SCOPE + " user/Encounter.rs")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    token2 = smart.code_flow(client_id, SCOPE)["refresh_token"]
    narrower = _refresh(http, client_id, token2, "offline_access user/Patient.rs")
    assert narrower.status_code == 200
    assert narrower.json()["scope"] == "offline_access user/Patient.rs"


def _refresh_row(app, token: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from smart_auth.hashing import token_hash
    from smart_auth.models import refresh_tokens

    with app.state.store.engine.connect() as conn:
        return conn.execute(
            select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(token))
        ).one()


def test_online_access_lasts_only_the_sign_in_session(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    import time

    from sqlalchemy import update

    from smart_auth.models import refresh_tokens

    online = SCOPE.replace("offline_access", "online_access")
    client_id, _ = smart.client(SCOPE + " online_access")
    smart.user()
    started = time.time()
    offline_token = smart.code_flow(client_id, SCOPE)["refresh_token"]
    online_token = smart.code_flow(client_id, online)["refresh_token"]
    session = auth_app.state.settings.auth_online_session_hours * 3600
    offline_days = auth_app.state.settings.auth_refresh_token_days * 86400
    assert _refresh_row(auth_app, offline_token).expires >= started + offline_days - 5
    first_expiry = _refresh_row(auth_app, online_token).expires
    assert started + session - 5 <= first_expiry <= time.time() + session
    time.sleep(1.1)
    rotated = _refresh(http, client_id, online_token)
    assert rotated.status_code == 200
    # a refresh does not extend the session: the new token ends when the sign-in did
    assert _refresh_row(auth_app, rotated.json()["refresh_token"]).expires == first_expiry
    with auth_app.state.store.engine.begin() as conn:  # the session ended
        conn.execute(update(refresh_tokens).values(expires=int(time.time()) - 1))
    late = _refresh(http, client_id, rotated.json()["refresh_token"])
    assert late.json()["error"] == "invalid_grant"


def test_refresh_refused_once_the_user_is_gone(http: TestClient, smart, auth_app) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import delete

    from smart_auth.models import users

    client_id, _ = smart.client(SCOPE)
    smart.user()
    token = smart.code_flow(client_id, SCOPE)["refresh_token"]
    with auth_app.state.store.engine.begin() as conn:
        conn.execute(delete(users).where(users.c.username == "alice"))
    refused = _refresh(http, client_id, token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_refresh_token_is_bound_to_its_client(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, _ = smart.client(SCOPE)
    other_id, _ = smart.client(SCOPE)
    smart.user()
    token = smart.code_flow(client_id, SCOPE)["refresh_token"]
    assert _refresh(http, other_id, token).json()["error"] == "invalid_grant"


def test_public_client_refreshes_with_the_refresh_token_alone(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    """SMART's refresh request carries no client_id, and fhirclient sends none: a public
    client is known by its refresh token. A confidential client must still authenticate."""
    client_id, _ = smart.client(SCOPE)
    smart.user()
    token = smart.code_flow(client_id, SCOPE)["refresh_token"]
    alone = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})
    assert alone.status_code == 200, alone.text
    assert alone.json()["refresh_token"] != token
    reused = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    unknown = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
    secret_id, secret = smart.client(SCOPE, "confidential-secret")
    held = smart.code_flow(secret_id, SCOPE, secret=secret)["refresh_token"]
    bare = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": held})
    assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"
    signed = http.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": held},
        auth=(secret_id, secret),
    )
    assert signed.status_code == 200, signed.text


def test_confidential_client_errors_never_say_which_part_was_wrong(http: TestClient, smart) -> None:  # type: ignore[no-untyped-def]
    client_id, secret = smart.client("user/*.rs", "confidential-secret")
    smart.user()
    body = smart.code_flow(client_id, "user/*.rs", secret=secret)
    assert body["access_token"]
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    wrong_secret = http.post("/auth/token", data=form, auth=(client_id, "nope"))
    wrong_id = http.post("/auth/token", data=form, auth=("nobody", secret))
    assert wrong_secret.status_code == wrong_id.status_code == 401
    assert wrong_secret.json() == wrong_id.json()
    assert wrong_secret.json()["error"] == "invalid_client"


def test_token_endpoint_rejects_bad_requests(http: TestClient) -> None:
    assert http.post("/auth/token", data={}).json()["error"] == "invalid_request"
    unsupported = http.post("/auth/token", data={"grant_type": "password"})
    assert unsupported.json()["error"] == "unsupported_grant_type"
    as_json = http.post("/auth/token", json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400
    garbage = http.post(
        "/auth/token",
        content=b"\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert garbage.status_code in (400, 401)
