"""/openemr/launch and /openemr/callback on the wire: pages meant to run in OpenEMR's iframe.

Cookies are `SameSite=None; Secure` (the iframe is a third-party context; browsers treat
http://localhost as secure too), and their framing headers (`smart_auth.pages.framing`) name
exactly the configured OpenEMR origins in `frame-ancestors`, so no other site can frame them.
"""

from __future__ import annotations

import logging
from html import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from fhir_server.store.repository import HasStore
from openemr_bridge import setup
from openemr_bridge.config import BridgeSettings
from openemr_bridge.launch import LaunchBridge, LaunchError, LaunchSettings
from openemr_bridge.sync import Syncer
from smart_auth.authorize import SESSION_COOKIE
from smart_auth.pages import framing, page
from smart_auth.server import AuthServer

log = logging.getLogger("interop.openemr")
LAUNCH_COOKIE = "interop_openemr_launch"


def public_root(fhir_base: str) -> str:
    return fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base


def build_syncer(settings: BridgeSettings, ctx: HasStore) -> Syncer | None:
    """The syncer the app uses for launches and read-through (None: bridge off or no source)."""
    if not settings.openemr_url:
        return None
    if not (settings.openemr_username or settings.openemr_source == "db"):
        return None
    return Syncer(ctx, setup.source(settings), setup.systems(settings), settings.openemr_page_size)


def build_bridge(
    settings: BridgeSettings, ctx: HasStore, auth: AuthServer, syncer: Syncer | None
) -> LaunchBridge | None:
    if not settings.openemr_url:
        return None
    config = setup.config(settings)
    launch_settings = LaunchSettings(
        client_id=settings.openemr_client_id,
        client_secret=settings.openemr_client_secret.get_secret_value(),
        redirect_uri=f"{public_root(settings.effective_base_url)}/openemr/callback",
        allowed_iss=setup.allowed_iss(settings),
        app_client=settings.openemr_launch_client,
        roles=settings.openemr_roles,
        systems=setup.systems(settings),
        session_seconds=settings.auth_launch_seconds,
        verify=config.tls_verify(),
        timeout=config.timeout,
        outbound=config.policy(),
    )
    return LaunchBridge(launch_settings, auth, ctx, syncer)


def routes(settings: BridgeSettings, bridge: LaunchBridge | None) -> list[BaseRoute]:
    framed_by_openemr = framing(setup.frame_origins(settings))

    def error(exc: LaunchError) -> Response:
        return HTMLResponse(
            page("Cannot open the app", f"<p>{escape(str(exc))}</p>"), exc.status, framed_by_openemr
        )

    async def launch(request: Request) -> Response:
        if bridge is None:
            return error(LaunchError("The OpenEMR bridge is off (INTEROP_OPENEMR_URL).", 404))
        params = request.query_params
        try:
            started = await run_in_threadpool(
                bridge.start, params.get("iss", ""), params.get("launch", "")
            )
        except LaunchError as exc:
            return error(exc)
        except Exception:
            log.exception("OpenEMR launch could not start")
            return error(LaunchError("Internal error while starting the launch.", 500))
        response = RedirectResponse(started.redirect, 302, framed_by_openemr)
        response.set_cookie(LAUNCH_COOKIE, started.browser, max_age=600, path="/openemr",
                            secure=True, httponly=True, samesite="none")  # fmt: skip
        return response

    async def callback(request: Request) -> Response:
        if bridge is None:
            return error(LaunchError("The OpenEMR bridge is off (INTEROP_OPENEMR_URL).", 404))
        params = dict(request.query_params)
        try:
            done = await run_in_threadpool(
                bridge.finish, params, request.cookies.get(LAUNCH_COOKIE)
            )
        except LaunchError as exc:
            log.warning("OpenEMR launch failed: %s", exc)
            return error(exc)
        except Exception:
            log.exception("OpenEMR launch could not finish")
            return error(LaunchError("Internal error while finishing the launch.", 500))
        log.info("OpenEMR launch for %s into Patient/%s", done.username, done.patient_id)
        response = RedirectResponse(done.redirect, 302, framed_by_openemr)
        response.delete_cookie(
            LAUNCH_COOKIE, path="/openemr", secure=True, httponly=True, samesite="none"
        )
        response.set_cookie(SESSION_COOKIE, done.session, max_age=bridge.settings.session_seconds,
                            path="/auth", secure=True, httponly=True, samesite="none")  # fmt: skip
        return response

    return [Route("/openemr/launch", launch), Route("/openemr/callback", callback)]
