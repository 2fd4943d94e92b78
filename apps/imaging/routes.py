"""Serving the imaging app and registering it as a SMART client.

The app is static files (package data) plus `config.json`, which tells the page its client
id and scopes. It is a public SMART client (PKCE) registered at first start under a fixed id,
`interop-imaging`, with this server's own redirect and launch URLs, so OpenEMR's launch broker
can launch it (INTEROP_OPENEMR_LAUNCH_CLIENT defaults to it) and a user can open it standalone.
Its pages may be framed by this server and by the OpenEMR origins the operator configured.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from smart_auth.registry import Registry, RegistryError

log = logging.getLogger("interop.apps")
STATIC = Path(__file__).parent / "static"
CLIENT_ID = "interop-imaging"
PATH = "/apps/imaging"
SCOPE = (
    "openid fhirUser launch launch/patient online_access "
    "patient/Patient.rs patient/ImagingStudy.rs patient/DiagnosticReport.rus "
    "patient/Observation.rs patient/Device.rs patient/Provenance.rs"
)  # patient scopes only: a launch sees its patient's data and nobody else's
FILES = {"app.js": "text/javascript", "app.css": "text/css", "app.js.map": "application/json"}


def register(registry: Registry, root: str) -> None:
    """Register the app (or re-register it when this server's public URL changed)."""
    redirect, launch = f"{root}{PATH}/", f"{root}{PATH}/launch"
    known = registry.client(CLIENT_ID)
    if known is not None and known.redirect_uris == [redirect] and known.launch_url == launch:
        return
    if known is not None:
        registry.remove_client(CLIENT_ID)
    try:
        registry.add_client(
            name="Imaging and AI review",
            client_type="public",
            redirect_uris=[redirect],
            scope=SCOPE,
            launch_url=launch,
            client_id=CLIENT_ID,
        )
    except (RegistryError, IntegrityError) as exc:  # another worker, at the same moment
        if registry.client(CLIENT_ID) is None:
            raise
        log.debug("imaging app registered concurrently: %s", exc)


def headers(frame_origins: Sequence[str]) -> dict[str, str]:
    """Framed by this server and OpenEMR only; scripts, data and workers from here only."""
    ancestors = " ".join(["'self'", *frame_origins])
    return {
        "Content-Security-Policy": (
            f"frame-ancestors {ancestors}; default-src 'self'; img-src 'self' blob: data:; "
            "script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
            "style-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def routes(fhir_base: str, frame_origins: Sequence[str]) -> list[BaseRoute]:
    sent = headers(frame_origins)

    def page(name: str) -> Response:
        return FileResponse(STATIC / name, headers=sent, media_type="text/html")

    async def index(request: Request) -> Response:
        return page("index.html")

    async def launch(request: Request) -> Response:
        return page("launch.html")

    async def bare(request: Request) -> Response:
        return RedirectResponse(f"{PATH}/", 308)

    async def config(request: Request) -> Response:
        return JSONResponse(
            {"clientId": CLIENT_ID, "fhirBase": fhir_base, "scope": SCOPE}, headers=sent
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FILES or not (STATIC / name).is_file():
            return JSONResponse({"error": "not found"}, 404)
        return FileResponse(STATIC / name, headers=sent, media_type=FILES[name])

    return [
        Route(PATH, bare),
        Route(f"{PATH}/", index),
        Route(f"{PATH}/launch", launch),
        Route(f"{PATH}/config.json", config),
        Route(PATH + "/{name}", asset),
    ]
