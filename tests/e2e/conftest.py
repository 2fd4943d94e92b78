"""Fixtures for the browser end-to-end tests: the real server on a socket, a static SMART app
on a second origin, the operator's `interop` command line, and the browser driver.

What they need beyond the venv -- Debian's Chromium, Node.js and the npm packages pinned in
tests/e2e/package-lock.json -- is installed by scripts/setup-env. Without it these tests skip
locally with the reason; in CI (CI=true) they fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import uvicorn
from ci_support import unavailable

from interop.app import create_app
from interop.cli import main as interop_main
from interop.settings import Settings, get_settings

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "app"
MODULES = HERE / "node_modules"
FHIR_CLIENT_JS = MODULES / "fhirclient" / "build" / "fhir-client.min.js"
CHROMIUM = os.environ.get("INTEROP_E2E_CHROMIUM", "/usr/bin/chromium")


def _require(browser: bool) -> None:
    """Skips (locally) or fails (CI) when what setup-env installs for these tests is missing."""
    missing = []
    if browser and not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node (Node.js 18 or newer)")
    for package in ("fhirclient", "playwright-core") if browser else ("jose",):
        if not (MODULES / package / "package.json").is_file():
            missing.append(f"the npm package {package} (npm ci in tests/e2e)")
    if not missing:
        return
    reason = "these e2e tests need " + "; ".join(missing) + " -- scripts/setup-env installs them"
    unavailable(reason)


@pytest.fixture(scope="session")
def tools() -> None:
    """Node.js and `jose`, for the backend-services client."""
    _require(browser=False)


@pytest.fixture(scope="session")
def browser_tools() -> None:
    """Debian's Chromium, playwright-core and fhirclient, for the SMART app in a browser."""
    _require(browser=True)


def node(script: str, *args: str, timeout: float = 60) -> str:
    """Runs one of the scripts beside this file with the machine's Node.js."""
    done = subprocess.run(
        ["node", str(HERE / script), *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"node {script} failed:\n{done.stderr}"
    return done.stdout


# -- the server ------------------------------------------------------------------------------


@dataclass
class LiveServer:
    origin: str
    database_url: str
    app: Any

    @property
    def fhir_base(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/auth/token"

    def interop(self, *argv: str, stdin: str = "") -> dict[str, Any]:
        """`interop ARGV --json` as an operator runs it against this server's database.

        In this process, so it is quick: only the two variables are set and put back (never
        the whole environment swapped, which the server's threads read concurrently)."""
        env = {"INTEROP_DATABASE_URL": self.database_url, "INTEROP_BASE_URL": self.fhir_base}
        saved = {name: os.environ.get(name) for name in env}
        out = io.StringIO()
        os.environ.update(env)
        get_settings.cache_clear()
        try:
            with mock.patch("sys.stdin", io.StringIO(stdin)), contextlib.redirect_stdout(out):
                status = interop_main([*argv, "--json"])
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            get_settings.cache_clear()
        assert status == 0, f"interop {' '.join(argv)} exited {status}"
        return dict(json.loads(out.getvalue()))


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[LiveServer]:
    """The whole ASGI app, auth on, served by uvicorn on a real 127.0.0.1 socket."""
    sock = _listening_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(Settings(database_url=database_url, auth="on", base_url=f"{origin}/fhir"))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(origin, database_url, app)
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()
        app.state.store.engine.dispose()


# -- the SMART app's origin ------------------------------------------------------------------


@dataclass
class AppSite:
    """launch.html and index.html (tests/e2e/app), fhirclient's browser bundle, and a
    config.js naming the client id the operator registered for this test."""

    origin: str
    config: dict[str, str] = field(default_factory=dict)

    @property
    def launch_url(self) -> str:
        return f"{self.origin}/launch.html"

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/index.html"


@pytest.fixture(scope="module")
def app_site(browser_tools: None) -> Iterator[AppSite]:
    site = AppSite("")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(APP_DIR), **kwargs)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config.js":
                self._send(b"window.E2E = " + json.dumps(site.config).encode() + b";")
            elif path == "/fhir-client.js":
                self._send(FHIR_CLIENT_JS.read_bytes())
            else:
                super().do_GET()

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def end_headers(self) -> None:
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- the browser -----------------------------------------------------------------------------


class Browser:
    """One headless Chromium (drive.mjs) for the session; each visit gets a fresh context."""

    def __init__(self, stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            ["node", str(HERE / "drive.mjs"), CHROMIUM],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def visit(self, url: str, timeout: float = 90, **spec: Any) -> dict[str, Any]:
        """Opens `url` and plays the user through our pages; returns what the driver saw."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"url": url, **spec}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"the browser driver did not answer:\n{self.stderr_path.read_text()}"
        result = dict(json.loads(line))
        assert "error" not in result, json.dumps(result, indent=2)
        # the page and everything it loaded stayed on this machine, and nothing failed
        for request in result["requests"]:
            _, how, _, url = request.split(" ", 3)
            assert how == "done" and url.startswith("http://127.0.0.1:"), request
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


@pytest.fixture(scope="session")
def browser(browser_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    driver = Browser(tmp_path_factory.mktemp("browser") / "drive.stderr")
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def run_node(tools: None) -> Any:
    return node
