"""The hosted imaging app: served with its security headers, registered as a SMART client at
first start (launchable from OpenEMR by default), and its committed bundle is what the build
script makes from the pinned npm packages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ci_support import unavailable
from starlette.testclient import TestClient

from apps.imaging import routes as imaging_app
from interop.app import create_app
from interop.settings import Settings

WEB = Path(imaging_app.__file__).parent / "web"


def test_app_pages_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/apps/imaging/")
    assert page.status_code == 200 and '<script src="app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-eval'" not in policy.replace("wasm-unsafe-eval'", "")
    assert client.get("/apps/imaging/launch").status_code == 200
    bundle = client.get("/apps/imaging/app.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith(
        "text/javascript"
    )
    assert client.get("/apps/imaging/../../etc/passwd").status_code == 404
    assert client.get("/apps/imaging/index.py").status_code == 404
    config = client.get("/apps/imaging/config.json").json()
    assert config["clientId"] == imaging_app.CLIENT_ID
    assert "patient/DiagnosticReport.rus" in config["scope"]


def test_app_is_registered_once_at_start(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'first.db'}",
        auth="on",
        base_url="http://testserver/fhir",
        openemr_url="http://emr.example",
    )
    app = create_app(settings)  # the first start on an empty database
    registry = app.state.auth.registry
    client = registry.client(imaging_app.CLIENT_ID)
    assert client is not None and client.public
    assert client.launch_url == "http://testserver/apps/imaging/launch"
    assert client.redirect_uris == ["http://testserver/apps/imaging/"]
    imaging_app.register(registry, "http://testserver")  # a second start changes nothing
    imaging_app.register(registry, "https://moved.example")  # a new public URL re-registers
    moved = registry.client(imaging_app.CLIENT_ID)
    assert moved is not None and moved.launch_url == "https://moved.example/apps/imaging/launch"
    assert app.state.openemr_launch.settings.app_client == imaging_app.CLIENT_ID
    app.state.store.engine.dispose()


def test_committed_bundle_matches_a_rebuild(tmp_path: Path) -> None:
    missing = [] if shutil.which("node") else ["node"]
    if not (WEB / "node_modules" / "esbuild").is_dir():
        missing.append("the npm packages of apps/imaging/web (npm ci; scripts/setup-env)")
    if missing:
        reason = f"rebuilding the imaging app needs {', '.join(missing)}"
        unavailable(reason)
    out = tmp_path / "app.js"
    done = subprocess.run(
        ["node", "build.mjs", str(out)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = (WEB.parent / "static" / "app.js").read_bytes()
    assert out.read_bytes() == committed, "apps/imaging/static/app.js is stale: npm run build"
