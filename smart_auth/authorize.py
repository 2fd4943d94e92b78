"""The authorization endpoint and the pages behind it: login, patient picker, consent.

The validated request is kept server-side (`auth_requests`) under a random id; every form
carries a CSRF token that must match both that row and a cookie (compared in constant time),
so a page cannot be driven from another site, and no page may be framed by another site
(`pages.framing`). Wrong passwords are throttled per user name and per client address
(`smart_auth.throttle`), the same way whether the user exists or not. Errors before the client
and redirect URI are known are shown as a page (never redirected to an unverified URI); later
errors go back to the app with `state`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete, insert, select, update
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_server.errors import FhirError
from fhir_server.store.db import write_transaction
from smart_auth import pages
from smart_auth import scopes as sc
from smart_auth.models import authorization_requests
from smart_auth.patients import list_encounters, list_patients, patient_exists
from smart_auth.registry import redirect_host
from smart_auth.server import AuthServer
from smart_auth.signin import SignIn, same_token

REQUEST_SECONDS = 600
CSRF_COOKIE = "interop_auth_csrf"
SESSION_COOKIE = "interop_sso"  # set by a trusted broker (openemr_bridge), path /auth


class AuthorizeFlow:
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.engine = server.engine
        self.config = server.config
        self.signin = SignIn(server.registry, server.config)

    # -- GET/POST /auth/authorize -------------------------------------------------------------

    def start(self, params: dict[str, str], session: str | None = None) -> Response:
        client = self.server.registry.client(params.get("client_id", ""))
        if client is None:
            return _page_error("Unknown client_id; the app is not registered here.")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _page_error("redirect_uri is not one the app registered (exact match needed).")
        state = params.get("state")

        def fail(error: str, description: str) -> Response:
            return _redirect(
                redirect_uri, {"error": error, "error_description": description, "state": state}
            )

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        if params.get("aud", "").rstrip("/") != self.config.fhir_base:
            return fail("invalid_request", f"aud must be this FHIR server: {self.config.fhir_base}")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge or not client.pkce_exempt:
            if not challenge:
                return fail("invalid_request", "PKCE is required: send code_challenge (S256)")
            if method != "S256":
                return fail("invalid_request", "code_challenge_method must be S256")
            if not 43 <= len(challenge) <= 128:
                return fail("invalid_request", "code_challenge is malformed")
        requested = sc.split(params.get("scope"))
        scope = sc.narrow(requested, client.scope)
        if not scope:
            return fail("invalid_scope", "None of the requested scopes is allowed for this app")
        context: dict[str, Any] = {"nonce": params.get("nonce")}
        launch_user = None
        if "launch" in scope:
            launch = self.server.consume_launch(params.get("launch", ""), client.client_id)
            if launch is None:
                return fail("invalid_request", "The launch id is unknown, used or expired")
            context.update(patient=launch.patient, encounter=launch.encounter, intent=launch.intent)
            launch_user = launch.username
        elif params.get("launch"):
            return fail("invalid_scope", "A launch parameter needs the launch scope")
        sso_user = self.server.session_user(session or "", client.client_id)
        if sso_user and launch_user == sso_user:
            return self._signed_on(client, params, scope, context, sso_user)
        request_id = secrets.token_urlsafe(24)
        with write_transaction(self.engine) as conn:
            conn.execute(
                delete(authorization_requests).where(authorization_requests.c.expires < time.time())
            )
            conn.execute(
                insert(authorization_requests).values(
                    request_id=request_id,
                    params=json.dumps(
                        {
                            "client_id": client.client_id,
                            "redirect_uri": redirect_uri,
                            "state": state,
                            "scope": scope,
                            "code_challenge": challenge,
                            "context": context,
                            "launch_user": launch_user,
                        }
                    ),
                    csrf=secrets.token_urlsafe(24),
                    patient=context.get("patient"),
                    encounter=context.get("encounter"),
                    expires=int(time.time()) + REQUEST_SECONDS,
                )
            )
        return RedirectResponse(f"login?{urlencode({'request': request_id})}", 303)

    # -- the pages ----------------------------------------------------------------------------

    def login_form(self, request_id: str, error: str = "", status: int = 401) -> Response:
        pending = self._pending(request_id)
        if pending is None:
            return _page_error("This sign-in request expired; start again from the app.")
        page = pages.login_page(request_id, pending["csrf"], self._shown(pending), error)
        response = self._html(page, pending, status if error else 200)
        self._set_csrf_cookie(response, pending["csrf"])
        return response

    def login(self, form: dict[str, str], cookie: str | None, address: str = "") -> Response:
        pending = self._checked(form, cookie)
        if isinstance(pending, Response):
            return pending
        attempt = self.signin.attempt(form.get("username", ""), form.get("password", ""), address)
        user = attempt.user
        if user is None and attempt.wait == 0:
            return self.login_form(pending["request_id"], "Wrong user name or password.")
        if user is None:
            response = self.login_form(
                pending["request_id"],
                f"Too many failed sign-ins. Try again in {attempt.wait} seconds.",
                429,
            )
            response.headers["Retry-After"] = str(attempt.wait)
            return response
        launch_user = pending["params"].get("launch_user")
        if launch_user and launch_user != user.username:
            return self._deny(pending, "The launch was made for another user")
        patient = pending["patient"]
        if user.role == "patient" and user.fhir_user:
            patient = user.fhir_user.split("/", 1)[1]
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(authorization_requests)
                .where(authorization_requests.c.request_id == pending["request_id"])
                .values(username=user.username, patient=patient)
            )
        return self._next(pending["request_id"])

    def picker(self, request_id: str, search: str = "") -> Response:
        pending = self._pending(request_id)
        if pending is None or not pending["username"]:
            return _page_error("This request expired or you are not signed in.")
        try:
            patients = list_patients(self.engine, search[:200])
        except FhirError:
            patients = []
        return self._html(pages.picker_page(request_id, pending["csrf"], patients, search), pending)

    def encounter_form(self, request_id: str) -> Response:
        pending = self._pending(request_id)
        if pending is None or not pending["username"] or not pending["patient"]:
            return _page_error("This request expired or no patient is chosen yet.")
        encounters = list_encounters(self.engine, pending["patient"])
        return self._html(pages.encounter_page(request_id, pending["csrf"], encounters), pending)

    def choose_encounter(self, form: dict[str, str], cookie: str | None) -> Response:
        """launch/encounter in a standalone launch: one of the chosen patient's encounters,
        or none when the patient has none."""
        pending = self._checked(form, cookie)
        if isinstance(pending, Response):
            return pending
        if not pending["username"] or not pending["patient"]:
            return _page_error("Sign in and choose a patient first.", 400)
        chosen = form.get("encounter", "")
        encounters = [eid for eid, _ in list_encounters(self.engine, pending["patient"])]
        if (chosen or encounters) and chosen not in encounters:
            return _page_error("Choose one of the listed encounters.", 400)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(authorization_requests)
                .where(authorization_requests.c.request_id == pending["request_id"])
                .values(encounter=chosen)  # "" records "chosen: none"
            )
        return self._next(pending["request_id"])

    def pick(self, form: dict[str, str], cookie: str | None) -> Response:
        pending = self._checked(form, cookie)
        if isinstance(pending, Response):
            return pending
        patient = form.get("patient", "")
        if not pending["username"] or not patient_exists(self.engine, patient):
            return _page_error("Choose one of the listed patients.", 400)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(authorization_requests)
                .where(authorization_requests.c.request_id == pending["request_id"])
                .values(patient=patient)
            )
        return self._next(pending["request_id"])

    def consent_form(self, request_id: str) -> Response:
        pending = self._pending(request_id)
        if pending is None or not pending["username"]:
            return _page_error("This request expired or you are not signed in.")
        page = pages.consent_page(
            request_id,
            pending["csrf"],
            self._shown(pending),
            pending["params"]["scope"],
            pending["patient"],
        )
        return self._html(page, pending)

    def consent(self, form: dict[str, str], kept: list[str], cookie: str | None) -> Response:
        pending = self._checked(form, cookie)
        if isinstance(pending, Response):
            return pending
        if not pending["username"]:
            return _page_error("You are not signed in.", 400)
        if form.get("decision") != "allow":
            return self._deny(pending, "The user denied access")
        params = pending["params"]
        scope = [s for s in params["scope"] if s in kept]
        if not scope:
            return self._deny(pending, "The user kept no scope")
        client = self.server.registry.client(params["client_id"])
        user = self.server.registry.user(pending["username"])
        if client is None or user is None:
            return _page_error("The app or the user no longer exists.", 400)
        context = dict(params["context"])
        context.update(
            patient=pending["patient"],
            encounter=pending["encounter"] or None,
            fhirUser=user.fhir_user,
            role=user.role,
        )
        code = self.server.issue_code(
            client, params["redirect_uri"], scope, params["code_challenge"], user.username, context
        )
        self._forget(pending["request_id"])
        return _redirect(params["redirect_uri"], {"code": code, "state": params["state"]})

    def _signed_on(
        self, client: Any, params: dict[str, str], scope: list[str], context: dict[str, Any],
        username: str,
    ) -> Response:  # fmt: skip
        """An EHR launch made by a broker for the user of this browser's session: the user
        signed in (and chose the app) in the EHR, so neither login nor consent is shown."""
        user = self.server.registry.user(username)
        if user is None:
            return _page_error("The signed-in user no longer exists.", 400)
        context = dict(context, fhirUser=user.fhir_user, role=user.role)
        code = self.server.issue_code(
            client, params["redirect_uri"], scope, params.get("code_challenge"), username, context
        )
        return _redirect(params["redirect_uri"], {"code": code, "state": params.get("state")})

    # -- helpers ------------------------------------------------------------------------------

    def _next(self, request_id: str) -> Response:
        pending = self._pending(request_id)
        assert pending is not None
        scope = pending["params"]["scope"]
        query = urlencode({"request": request_id})
        if "launch/patient" in scope and not pending["patient"]:
            return RedirectResponse(f"pick?{query}", 303)
        if "launch/encounter" in scope and pending["patient"] and pending["encounter"] is None:
            return RedirectResponse(f"encounter?{query}", 303)
        return RedirectResponse(f"consent?{urlencode({'request': request_id})}", 303)

    def _pending(self, request_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(authorization_requests).where(
                    authorization_requests.c.request_id == request_id[:64]
                )
            ).first()
        if row is None or row.expires < time.time():
            return None
        return {
            "request_id": row.request_id,
            "params": json.loads(row.params),
            "csrf": row.csrf,
            "username": row.username,
            "patient": row.patient,
            "encounter": row.encounter,
        }

    def _checked(self, form: dict[str, str], cookie: str | None) -> dict[str, Any] | Response:
        """The pending request a form belongs to, if the form's CSRF token is that request's
        and this browser's (the cookie); else a 403 page."""
        pending = self._pending(form.get("request", ""))
        if pending is None:
            return _page_error("This request expired; start again from the app.", 400)
        expected = pending["csrf"]
        if not (same_token(form.get("csrf"), expected) and same_token(cookie, expected)):
            return _page_error(
                "This form could not be verified: it was not sent from this sign-in page in "
                "this browser (CSRF check). Go back to the app and start again.",
                403,
            )
        return pending

    def _shown(self, pending: dict[str, Any]) -> pages.AppShown:
        params = pending["params"]
        client = self.server.registry.client(params["client_id"])
        return pages.AppShown(
            client.name if client else "An app",
            client.verified if client else False,
            redirect_host(params["redirect_uri"]),
        )

    def _html(self, body: str, pending: dict[str, Any] | None, status: int = 200) -> Response:
        """A page; the pages of an EHR launch may be framed by the EHR (OpenEMR), no others."""
        ehr = pending is not None and "launch" in pending["params"]["scope"]
        return HTMLResponse(body, status, pages.framing(self.config.frame_origins if ehr else ()))

    def _deny(self, pending: dict[str, Any], description: str) -> Response:
        self._forget(pending["request_id"])
        params = pending["params"]
        return _redirect(
            params["redirect_uri"],
            {"error": "access_denied", "error_description": description, "state": params["state"]},
        )

    def _forget(self, request_id: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                delete(authorization_requests).where(
                    authorization_requests.c.request_id == request_id
                )
            )

    def _set_csrf_cookie(self, response: Response, csrf: str) -> None:
        secure = self.config.secure_cookies
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=REQUEST_SECONDS,
            path="/auth",
            httponly=True,
            secure=secure,
            samesite="none" if secure else "lax",
        )


def _redirect(uri: str, params: dict[str, Any]) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(
        f"{uri}{'&' if '?' in uri else '?'}{query}", 302, headers={"Cache-Control": "no-store"}
    )


def _page_error(message: str, status: int = 400) -> Response:
    return HTMLResponse(pages.error_page(message), status, pages.framing())
