"""The authorization server on the wire: /auth endpoints and the discovery documents."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from smart_auth import discovery
from smart_auth import scopes as sc
from smart_auth.authorize import CSRF_COOKIE, SESSION_COOKIE, AuthorizeFlow
from smart_auth.errors import NO_STORE, OAuthError, invalid_request
from smart_auth.pages import framing, page
from smart_auth.registry import RegistryError
from smart_auth.server import AuthServer
from smart_auth.throttle import Throttle

log = logging.getLogger("interop.auth")
CORS = {"Access-Control-Allow-Origin": "*"}
STYLE = {
    "color_background": "#edeae3",
    "color_error": "#9e2d2d",
    "color_highlight": "#69b5ce",
    "color_modal_backdrop": "",
    "color_success": "#498e49",
    "color_text": "#303030",
    "dim_border_radius": "6px",
    "dim_font_size": "13px",
    "dim_spacing_size": "20px",
    "font_family_body": "Georgia, Times, 'Times New Roman', serif",
    "font_family_heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif",
}
MAX_FORM = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def _fields(form: FormData) -> dict[str, str]:
    return _clean({k: v for k, v in form.items() if isinstance(v, str)})


def _clean(params: dict[str, str]) -> dict[str, str]:
    """NUL bytes have no place in OAuth parameters (and PostgreSQL cannot store them)."""
    if any("\x00" in k or "\x00" in v for k, v in params.items()):
        raise invalid_request("Parameters may not contain NUL characters")
    return params


async def _form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise invalid_request("Send the parameters as application/x-www-form-urlencoded")
    if len(await request.body()) > MAX_FORM:
        raise invalid_request("The request body is too large")
    return await request.form()


def _guarded(endpoint: Endpoint) -> Endpoint:
    """OAuth errors become RFC 6749 JSON; nothing a client sends becomes a 500."""

    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OAuthError as exc:
            return exc.response()
        except Exception:
            log.exception("unhandled error in %s", request.url.path)
            return JSONResponse(
                {"error": "server_error", "error_description": "internal error"}, 500, NO_STORE
            )

    return wrapper


def auth_routes(server: AuthServer) -> list[BaseRoute]:
    flow = AuthorizeFlow(server)
    config = server.config

    async def authorize(request: Request) -> Response:
        if request.method == "POST":
            params = _fields(await _form(request))
        else:
            params = _clean(dict(request.query_params))
        return await run_in_threadpool(flow.start, params, request.cookies.get(SESSION_COOKIE))

    def form_page(
        show: Callable[[str], Response], submit: Callable[[dict[str, str], str | None], Response]
    ) -> Endpoint:
        """GET shows a page for a pending request; POST submits its CSRF-protected form."""

        async def endpoint(request: Request) -> Response:
            if request.method == "GET":
                request_id = _clean(dict(request.query_params)).get("request", "")
                return await run_in_threadpool(show, request_id)
            form = _fields(await _form(request))
            return await run_in_threadpool(submit, form, request.cookies.get(CSRF_COOKIE))

        return endpoint

    async def login(request: Request) -> Response:
        if request.method == "GET":
            request_id = _clean(dict(request.query_params)).get("request", "")
            return await run_in_threadpool(flow.login_form, request_id)
        form = _fields(await _form(request))
        cookie = request.cookies.get(CSRF_COOKIE)
        return await run_in_threadpool(flow.login, form, cookie, _address(request))

    choose_encounter = form_page(flow.encounter_form, flow.choose_encounter)

    async def pick(request: Request) -> Response:
        if request.method == "GET":  # the picker, with an optional name search `q`
            query = _clean(dict(request.query_params))
            return await run_in_threadpool(
                flow.picker, query.get("request", ""), query.get("q", "")
            )
        form = _fields(await _form(request))
        return await run_in_threadpool(flow.pick, form, request.cookies.get(CSRF_COOKIE))

    async def consent(request: Request) -> Response:
        if request.method == "GET":
            request_id = _clean(dict(request.query_params)).get("request", "")
            return await run_in_threadpool(flow.consent_form, request_id)
        raw = await _form(request)
        kept = [v for v in raw.getlist("scope") if isinstance(v, str)]
        return await run_in_threadpool(
            flow.consent, _fields(raw), kept, request.cookies.get(CSRF_COOKIE)
        )

    async def token(request: Request) -> Response:
        form = _fields(await _form(request))
        await server.assertions.prefetch(form)  # a client's JWKS: fetched on the loop
        body = await run_in_threadpool(server.token, form, request.headers.get("authorization"))
        return JSONResponse(body, headers=NO_STORE)

    async def introspect(request: Request) -> Response:
        """RFC 7662 §2.1: only an authenticated confidential client (secret or private_key_jwt)
        may ask, never a bearer token; it learns about its own tokens only (see introspect)."""
        form = _fields(await _form(request))
        await server.assertions.prefetch(form)
        caller = await run_in_threadpool(
            server.authenticate, form, request.headers.get("authorization"), False
        )
        if not form.get("token"):
            raise invalid_request("token is required")
        return JSONResponse(
            await run_in_threadpool(server.introspect, form["token"], caller), headers=NO_STORE
        )

    async def revoke(request: Request) -> Response:
        form = _fields(await _form(request))
        await server.assertions.prefetch(form)
        client = await run_in_threadpool(
            server.authenticate, form, request.headers.get("authorization")
        )
        if not form.get("token"):
            raise invalid_request("token is required")
        await run_in_threadpool(server.revoke, client, form["token"])
        return Response(status_code=200, headers=NO_STORE)

    async def launch(request: Request) -> Response:
        form = _fields(await _form(request))
        await server.assertions.prefetch(form)
        caller = await run_in_threadpool(
            server.authenticate, form, request.headers.get("authorization"), False
        )
        if not caller.can_launch:
            raise OAuthError("unauthorized_client", "This client may not create launches", 403)
        launch_id, url = await run_in_threadpool(
            server.create_launch,
            form.get("app") or caller.client_id,
            form.get("patient"),
            form.get("encounter"),
            form.get("user"),
            form.get("intent"),
        )
        return JSONResponse(
            {
                "launch": launch_id,
                "iss": config.fhir_base,
                "launch_url": url,
                "expires_in": config.launch_seconds,
            },
            headers=NO_STORE,
        )

    registration_limit = Throttle(server.engine)

    async def register(request: Request) -> Response:
        if config.registration == "closed":
            return JSONResponse(
                {"error": "access_denied", "error_description": "registration is turned off"},
                403,
                NO_STORE,
            )
        if config.registration == "token" and not _initial_token_ok(
            request.headers.get("authorization"), config.registration_tokens
        ):  # RFC 7591 section 3: an initial access token, as an RFC 6750 bearer token
            return JSONResponse(
                {
                    "error": "invalid_token",
                    "error_description": "registration needs an initial access token "
                    "from the server's administrator (Authorization: Bearer ...)",
                },
                401,
                {**NO_STORE, "WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        wait = await run_in_threadpool(
            registration_limit.take,
            [
                (f"register-address:{_address(request)}", config.registration_per_address),
                ("register-all", config.registration_per_hour),
            ],
            3600,
        )
        if wait:
            return JSONResponse(
                {
                    "error": "too_many_requests",
                    "error_description": f"too many registrations; retry in {wait} seconds",
                },
                429,
                {**NO_STORE, "Retry-After": str(wait)},
            )
        try:
            metadata = json.loads(await request.body())
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            raise OAuthError("invalid_client_metadata", "Send the client metadata as JSON")
        return JSONResponse(await run_in_threadpool(_register, server, metadata), 201, NO_STORE)

    async def jwks(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(server.keys.jwks), headers=CORS)

    async def style(_: Request) -> Response:
        return JSONResponse(STYLE, headers=CORS)

    async def manage(_: Request) -> Response:
        return HTMLResponse(
            page(
                "Manage app access",
                "<p>Ask your administrator to revoke an app's access "
                "(<code>interop clients remove ID</code>), or revoke a token at "
                "<code>/auth/revoke</code>.</p>",
            ),
            headers=framing(),
        )

    both = ["GET", "POST"]
    return [
        Route("/auth/authorize", _guarded(authorize), methods=both),
        Route("/auth/login", _guarded(login), methods=both),
        Route("/auth/pick", _guarded(pick), methods=both),
        Route("/auth/encounter", _guarded(choose_encounter), methods=both),
        Route("/auth/consent", _guarded(consent), methods=both),
        Route("/auth/token", _guarded(token), methods=["POST"]),
        Route("/auth/introspect", _guarded(introspect), methods=["POST"]),
        Route("/auth/revoke", _guarded(revoke), methods=["POST"]),
        Route("/auth/launch", _guarded(launch), methods=["POST"]),
        Route("/auth/register", _guarded(register), methods=["POST"]),
        Route("/auth/jwks", _guarded(jwks), methods=["GET"]),
        Route("/auth/smart-style.json", style, methods=["GET"]),
        Route("/auth/manage", manage, methods=["GET"]),
    ]


def discovery_routes(server: AuthServer) -> list[BaseRoute]:
    smart = discovery.smart_configuration(server.config)
    openid = discovery.openid_configuration(server.config)

    async def smart_configuration(_: Request) -> Response:
        return JSONResponse(smart, headers=CORS)

    async def openid_configuration(_: Request) -> Response:
        return JSONResponse(openid, headers=CORS)

    return [
        Route("/fhir/.well-known/smart-configuration", smart_configuration, methods=["GET"]),
        Route("/fhir/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    ]


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _initial_token_ok(authorization: str | None, tokens: tuple[str, ...]) -> bool:
    scheme, _, presented = (authorization or "").partition(" ")
    given = presented.strip().encode()
    matched = [hmac.compare_digest(given, token.encode()) for token in tokens]
    return scheme.lower() == "bearer" and bool(given) and any(matched)


def _register(server: AuthServer, metadata: dict[str, Any]) -> dict[str, Any]:
    """RFC 7591: an app registers itself. It is recorded as unverified (the consent page says
    so), may ask for at most the operator's self-registration scopes (the rest is dropped, as
    RFC 7591 section 2 allows; nothing left is an error), and cannot register keys: backend
    (system/) and private_key_jwt clients are registered by operators."""
    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    kinds = {
        "none": "public",
        "client_secret_basic": "confidential-secret",
        "client_secret_post": "confidential-secret",
    }
    if method == "private_key_jwt":
        raise OAuthError(
            "invalid_client_metadata", "private_key_jwt clients are registered by operators only"
        )
    if method not in kinds:
        raise OAuthError("invalid_client_metadata", f"token_endpoint_auth_method '{method}'")
    scope = metadata.get("scope", "")
    redirect_uris = metadata.get("redirect_uris", [])
    if not isinstance(scope, str):
        raise OAuthError("invalid_client_metadata", "scope must be a space-separated string")
    if any(s.startswith("system/") for s in scope.split()):
        raise OAuthError("invalid_client_metadata", "system/ scopes are granted by operators only")
    if not isinstance(redirect_uris, list) or not all(isinstance(u, str) for u in redirect_uris):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of URLs")
    if not redirect_uris:
        raise OAuthError("invalid_redirect_uri", "an app needs at least one redirect URI")
    allowed = list(server.config.registration_scopes)
    granted = sc.narrow(sc.split(scope), allowed)
    if not granted:
        raise OAuthError(
            "invalid_client_metadata",
            "none of the requested scopes may be self-registered here; allowed: "
            + " ".join(allowed),
        )
    if metadata.get("jwks") is not None or metadata.get("jwks_uri") is not None:
        raise OAuthError("invalid_client_metadata", "only operators register client keys")
    try:
        client, secret = server.registry.add_client(
            name=str(metadata.get("client_name") or "unnamed app"),
            client_type=kinds[method],
            redirect_uris=redirect_uris,
            scope=" ".join(granted),
            verified=False,
        )
    except RegistryError as exc:
        raise OAuthError("invalid_client_metadata", str(exc)) from None
    out: dict[str, Any] = {
        "client_id": client.client_id,
        "client_name": client.name,
        "redirect_uris": client.redirect_uris,
        "scope": " ".join(client.scope),
        "token_endpoint_auth_method": method,
        "grant_types": ["authorization_code"]
        + (["refresh_token"] if set(granted) & {"offline_access", "online_access"} else []),
    }
    if secret:
        out["client_secret"] = secret
        out["client_secret_expires_at"] = 0
    return out
