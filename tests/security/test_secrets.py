"""Class 9 of the threat model: secrets at rest and in the open.

An attacker with a copy of the database looks for the token-signing private keys; one on the
network reads /metrics, /docs and /openapi.json. Keys must be sealed with a key kept outside the
database, and the operational endpoints closed unless the operator opens them.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_support import BASE, fresh_database_url  # noqa: F401 - a fixture
from joserfc.jwk import RSAKey
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from interop.app import create_app
from interop.cli import main as interop_main
from interop.settings import Settings, get_settings
from smart_auth.models import signing_keys
from smart_auth.sealing import SealingError


def settings(database_url: str, key_file: Path, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        auth="on",
        base_url=BASE,
        secret_key_file=str(key_file),
        **extra,
    )


@pytest.fixture
def started(fresh_database_url: str, tmp_path: Path) -> Iterator[tuple[Any, Path]]:  # noqa: F811
    key_file = tmp_path / "var" / "secret.key"
    app = create_app(settings(fresh_database_url, key_file))
    yield app, key_file
    app.state.store.engine.dispose()


def stored_keys(app: Any) -> list[tuple[str, str]]:
    with app.state.store.engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(signing_keys.c.kid, signing_keys.c.private_pem))
        ]  # type: ignore[misc]


def backend_token_verifies(app: Any) -> bool:
    client, secret = app.state.auth.registry.add_client(
        name="Backend", client_type="confidential-secret", redirect_uris=[], scope="system/*.rs"
    )
    with TestClient(app) as http:
        token = http.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": "system/*.rs"},
            auth=(client.client_id, secret),
        ).json()["access_token"]
        return (
            http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )


def test_signing_keys_in_the_database_are_not_plaintext_pem(started: tuple[Any, Path]) -> None:
    app, key_file = started
    rows = stored_keys(app)
    assert rows
    for _kid, stored in rows:
        assert "PRIVATE KEY" not in stored and "-----BEGIN" not in stored
        assert stored.startswith("aesgcm:")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32
    assert backend_token_verifies(app)


def test_keys_an_earlier_version_stored_in_clear_are_sealed_at_start(
    fresh_database_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "secret.key"
    first = create_app(settings(fresh_database_url, key_file))
    pem = RSAKey.generate_key(2048).as_pem(private=True).decode()
    with first.state.store.engine.begin() as conn:
        conn.execute(
            insert(signing_keys).values(
                kid="legacy", alg="RS256", private_pem=pem, created=0, retired=1
            )
        )
    first.state.store.engine.dispose()
    again = create_app(settings(fresh_database_url, key_file), migrate=False)
    try:
        legacy = dict(stored_keys(again))["legacy"]
        assert legacy.startswith("aesgcm:") and "PRIVATE KEY" not in legacy
        with TestClient(again) as http:
            assert "legacy" in {k["kid"] for k in http.get("/auth/jwks").json()["keys"]}
    finally:
        again.state.store.engine.dispose()


def test_a_key_file_others_may_read_refuses_to_start(started: tuple[Any, Path]) -> None:
    app, key_file = started
    url = str(app.state.store.engine.url.render_as_string(hide_password=False))
    key_file.chmod(0o644)
    with pytest.raises(SealingError, match="chmod 600"):
        create_app(settings(url, key_file), migrate=False)


def test_another_key_file_cannot_open_the_keys_and_refuses_to_start(
    started: tuple[Any, Path], tmp_path: Path
) -> None:
    app, _ = started
    url = str(app.state.store.engine.url.render_as_string(hide_password=False))
    other = tmp_path / "other.key"
    other.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    other.chmod(0o600)
    with pytest.raises(SealingError, match="INTEROP_SECRET_KEY_FILE"):
        create_app(settings(url, other), migrate=False)
    stolen = [stored for _, stored in stored_keys(app)]
    assert all(s.startswith("aesgcm:") for s in stolen)


def test_keys_rotate_seals_the_new_key(
    started: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app, key_file = started
    url = str(app.state.store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("INTEROP_DATABASE_URL", url)
    monkeypatch.setenv("INTEROP_SECRET_KEY_FILE", str(key_file))
    get_settings.cache_clear()
    try:
        assert interop_main(["keys", "rotate", "--json"]) == 0
    finally:
        get_settings.cache_clear()
    kid = capsys.readouterr().out.split('"kid": "')[1].split('"')[0]
    assert dict(stored_keys(app))[kid].startswith("aesgcm:")
    assert backend_token_verifies(app)


# -- operational endpoints ------------------------------------------------------------------


def test_metrics_docs_and_openapi_are_closed_without_authorization(
    database_url: str, tmp_path: Path
) -> None:
    app = create_app(Settings(database_url=database_url, base_url=BASE))
    with TestClient(app) as http:
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"):
            answer = http.get(path)
            assert answer.status_code in (401, 404), path
            assert "fhir_requests_total" not in answer.text and "openapi" not in answer.text
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
    app.state.store.engine.dispose()


def test_metrics_need_the_operators_bearer_token(database_url: str, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "metrics-token"
    token_file.write_text(token + "\n")
    app = create_app(
        Settings(database_url=database_url, base_url=BASE, metrics_token_file=str(token_file)),
    )
    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/metrics", headers={"Authorization": f"Basic {token}"}).status_code == 401
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "fhir_requests_total" in scraped.text
    app.state.store.engine.dispose()


def test_operator_can_open_metrics_and_docs(database_url: str) -> None:
    app = create_app(
        Settings(database_url=database_url, base_url=BASE, metrics="on", docs="on"),
    )
    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 200
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/docs").status_code == 200
    app.state.store.engine.dispose()
    closed = Settings(database_url=database_url, base_url=BASE, metrics="off")
    off = create_app(closed)
    with TestClient(off) as http:
        assert http.get("/metrics").status_code == 404
    off.state.store.engine.dispose()


def test_metrics_token_file_that_cannot_be_read_refuses_to_start(
    database_url: str, tmp_path: Path
) -> None:
    missing = Settings(
        database_url=database_url, base_url=BASE, metrics_token_file=str(tmp_path / "none")
    )
    with pytest.raises(ValueError, match="INTEROP_METRICS_TOKEN_FILE"):
        create_app(missing)
    assert not os.path.exists(tmp_path / "none")


def test_embedded_key_file_lies_beside_the_sqlite_database_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and an operator's `interop token` run from different directories on one
    SQLite file: both must find the one key file (else the keys cannot be opened)."""
    database = tmp_path / "data" / "interop.db"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    monkeypatch.chdir(tmp_path)
    app = create_app(Settings(database_url=url, auth="on", base_url=BASE))
    try:
        assert backend_token_verifies(app)
    finally:
        app.state.store.engine.dispose()
    key_file = database.parent / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = create_app(Settings(database_url=url, auth="on", base_url=BASE))
    try:
        assert backend_token_verifies(again)  # the keys open: same key file found
    finally:
        again.state.store.engine.dispose()
    assert not (elsewhere / "var").exists()
