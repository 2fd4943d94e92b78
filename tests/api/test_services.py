"""The one runtime: background services with health on /readyz, CLI commands built from it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interop import runtime as runtime_module
from interop.app import create_app
from interop.cli import main
from interop.services import Loop
from interop.settings import Settings, get_settings


def wait_for(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readyz_lists_each_service_with_its_health(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    services = ready.json()["services"]
    assert {"ai-runner", "outbox-runner", "bulk-jobs", "subscription-delivery"} <= set(services)
    assert all(s["status"] == "ok" for s in services.values()), services
    assert "subscriptions" in services["outbox-runner"]["consumers"]


def test_unreachable_pacs_shows_as_failing_with_backoff(database_url: str) -> None:
    """An Orthanc that refuses connections: the imaging sync keeps retrying, each wait longer
    than the last, /readyz names it failing (without the PACS's URL or password), and the
    server stays ready, since the FHIR API does not need the PACS."""
    port = closed_port()
    settings = Settings(
        database_url=database_url,
        auth="off",
        mllp_port=0,
        orthanc_url=f"http://127.0.0.1:{port}",
        orthanc_user="pacs",
        orthanc_password="pacs-secret-password",
        imaging_poll_seconds=0.1,
    )
    app = create_app(settings, channels=True)
    with TestClient(app) as http:
        seen: list[dict[str, Any]] = []

        def failing_twice() -> bool:
            health = http.get("/readyz").json()["services"]["imaging-sync"]
            seen.append(health)
            return health["status"] == "failing" and health["failures"] >= 2

        assert wait_for(failing_twice), seen[-1:]
        ready = http.get("/readyz")
        assert ready.status_code == 200
        sync = ready.json()["services"]["imaging-sync"]
        assert sync["last_success"] is None and sync["last_error"]
        assert sync["retry_in_seconds"] >= 0.1 * 2 ** sync["failures"] - 1e-9  # backing off
        assert "pacs-secret-password" not in ready.text and str(port) not in ready.text
    assert app.state.services.health()["imaging-sync"]["status"] == "stopped"


def test_backoff_doubles_and_a_success_resets_it() -> None:
    outcomes = iter([OSError("down"), OSError("down"), OSError("down"), None])

    def step() -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    loop = Loop("flaky", step, interval=1.0, max_backoff=5.0)
    waits = []
    for _ in range(3):
        assert not loop.run_once()
        waits.append(loop.retry_in)
    assert waits == [2.0, 4.0, 5.0]
    assert loop.run_once() and loop.retry_in is None and loop.failures == 0


def test_a_required_service_that_failed_makes_readyz_503(database_url: str) -> None:
    """The MLLP listener is required: when its port is taken it cannot start, and the
    server reports itself unavailable, naming the service."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(database_url=database_url, auth="off", mllp_port=port)
        app = create_app(settings, channels=True)
        with TestClient(app) as http:
            ready = http.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable" and "mllp" in body["reason"]
    assert body["services"]["mllp"]["status"] == "failed"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[list[Any]]:
    """Every Runtime the commands build, recorded."""
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    monkeypatch.setenv("INTEROP_AUTH", "off")
    get_settings.cache_clear()
    built: list[Any] = []
    original = runtime_module.Runtime.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(runtime_module.Runtime, "__init__", recording)
    yield built
    for runtime in built:
        runtime.engine.dispose()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "upgrade"],
        ["hl7", "list", "--json"],
        ["ai", "jobs", "--json"],
        ["openemr", "pending", "--json"],
        ["clients", "list"],
        ["import", "{ndjson}", "--json"],
    ],
)
def test_cli_commands_build_from_the_one_runtime(
    cli_env: list[Any], argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ndjson = tmp_path / "patients.ndjson"
    ndjson.write_text(json.dumps({"resourceType": "Patient", "id": "cli-1"}) + "\n")
    code = main([a.replace("{ndjson}", str(ndjson)) for a in argv])
    assert code == 0, capsys.readouterr()
    assert len(cli_env) == 1  # one runtime, the one composition root
    assert cli_env[0].settings.effective_database_url == get_settings().effective_database_url
