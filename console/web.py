"""The console on the wire: /console pages, server-rendered (Jinja2, autoescaped).

Who may do what: a console session (signed in on /console/login through the server's own
user store and throttled sign-in, `smart_auth.signin`) of a user with role admin or operator
(`smart_auth.policy.CONSOLE`); administration needs admin (`CONSOLE_ADMIN`). The role is read
from the user store on every request, so a demoted user loses access at once. No bearer token
is looked at: a SMART app's token opens nothing here. Every POST carries a CSRF token bound to
the session (an HMAC of the session's secret); the sign-in form one bound to a cookie, as on
the SMART pages. Every action and every page shown is an AuditEvent.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from console import figures
from console.messages import MAX_EXPORT, MessageQuery, QueryError, export, matching_ids, search
from console.messages import senders as known_senders
from console.messages import tree as message_tree
from fhir_server.store.audit import Actor, AuditTrail, Interaction
from hl7_listener.processor import Processor
from smart_auth.policy import CONSOLE, CONSOLE_ADMIN, Grant, Surface
from smart_auth.registry import CLIENT_TYPES, ROLES, RegistryError, User
from smart_auth.server import AuthServer
from smart_auth.signin import SignIn, same_token

log = logging.getLogger("interop.console")

CONSOLE_CLIENT = "interop-console"  # the client a console session is recorded for
SESSION_COOKIE = "interop_console"
LOGIN_COOKIE = "interop_console_login"
MAX_FORM = 256 * 1024
MAX_REPLAY = 200  # messages replayed by one click; the page says when more remain
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

FhirCall = Callable[[Grant, list[str], list[tuple[str, str]]], tuple[int, dict[str, Any]]]


@dataclass
class ConsoleDeps:
    """What the composition root hands the console."""

    engine: Engine
    auth: AuthServer
    processor: Processor  # the HL7 processor: replay maps stored messages again
    fhir: FhirCall  # a FHIR GET through the REST dispatch, with the caller's access
    audit: AuditTrail
    health: Callable[[], dict[str, Any]] = dict  # the services' health (/readyz)
    session_seconds: int = 8 * 3600
    secure_cookies: bool = False
    types: list[str] = field(default_factory=list)  # FHIR resource types, for the picker


@dataclass
class Call:
    """One request as a page handler sees it (read on the event loop, handled in a thread)."""

    request: Request
    user: User
    csrf: str
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    form_lists: dict[str, list[str]] = field(default_factory=dict)

    @property
    def grant(self) -> Grant:
        return session_grant(self.user)

    @property
    def address(self) -> str:
        return self.request.client.host if self.request.client else "unknown"


def session_grant(user: User) -> Grant:
    """A console user's grant: reads everything their role may read (the role table caps it)."""
    return Grant(
        subject=user.username,
        scopes=frozenset({"user/*.rs"}),
        client_id=CONSOLE_CLIENT,
        fhir_user=user.fhir_user,
        role=user.role,
    )


def _when(seconds: float | int | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["fhir_link"] = lambda ref: (
        "/console/fhir/" + "/".join(escape(p) for p in str(ref).split("/")[:2])
    )
    return env


def routes(deps: ConsoleDeps) -> list[BaseRoute]:
    return Console(deps).routes()


class Console:
    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.env = _environment()
        self.signin = SignIn(deps.auth.registry, deps.auth.config)

    # -- plumbing -------------------------------------------------------------------------

    def render(
        self, name: str, status: int = 200, call: Call | None = None, **values: Any
    ) -> Response:  # noqa: E501
        html = self.env.get_template(name).render(
            user=call.user if call else None, csrf=call.csrf if call else "", **values
        )
        return HTMLResponse(html, status, HEADERS)

    def _csrf_for(self, token: str) -> str:
        return hmac.new(token.encode(), b"interop-console-csrf", hashlib.sha256).hexdigest()

    def _user(self, token: str) -> User | None:
        username = self.deps.auth.session_user(token, CONSOLE_CLIENT)
        return self.deps.auth.registry.user(username) if username else None

    def record(self, call: Call | None, interaction: str, status: int = 200,
               res_type: str = "", res_id: str | None = None, method: str | None = None,
               user: User | None = None, address: str | None = None) -> None:  # fmt: skip
        """The action's AuditEvent (changes and refusals at once, page views in a batch)."""
        who = user or (call.user if call else None)
        actor = Actor(
            subject=who.username if who else None,
            fhir_user=who.fhir_user if who else None,
            client_id=CONSOLE_CLIENT,
            address=address or (call.address if call else None),
        )
        request_method = method or (call.request.method if call else "GET")
        try:
            self.deps.audit.record(
                Interaction(request_method, interaction, res_type, res_id, status, actor)
            )
        except Exception:  # noqa: BLE001 - the page still answers; the failure is logged
            log.exception("could not write the console's audit event")

    def page(
        self, surface: Surface, handler: Callable[[Call], Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A console endpoint: session and role checked, CSRF on POST, handler in a thread."""

        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE, "")
            user = await run_in_threadpool(self._user, token) if token else None
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":
                    target = "/console"
                return RedirectResponse(
                    "/console/login?" + urlencode({"next": target}), 303, HEADERS
                )
            call = Call(request, user, self._csrf_for(token), dict(request.query_params))
            if not surface.allows(session_grant(user)):
                await run_in_threadpool(self.record, call, "console-refused", 403)
                return self.render(
                    "refused.html", 403, call,
                    reason=f"{surface.name} needs role {' or '.join(sorted(surface.roles))}; "
                    f"you are signed in as {user.username} with role {user.role}.",
                )  # fmt: skip
            if request.method == "POST":
                try:
                    form = await _read_form(request)
                except ValueError as exc:
                    return self.render("refused.html", 400, call, reason=str(exc))
                call.form = {k: v for k, v in form.items() if isinstance(v, str)}
                call.form_lists = {
                    k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form
                }
                if not same_token(call.form.get("csrf"), call.csrf):
                    await run_in_threadpool(self.record, call, "console-csrf-refused", 403)
                    return self.render(
                        "refused.html", 403, call,
                        reason="This form could not be verified (CSRF check): reload the page "
                        "and send it again.",
                    )  # fmt: skip
            try:
                return await run_in_threadpool(handler, call)
            except QueryError as exc:
                return self.render("refused.html", 400, call, reason=str(exc))
            except Exception:
                log.exception("console page %s failed", request.url.path)
                return self.render(
                    "refused.html", 500, call, reason="Internal error; the log has the details."
                )

        return endpoint

    def routes(self) -> list[BaseRoute]:
        read, admin = CONSOLE, CONSOLE_ADMIN
        get, post = ["GET"], ["POST"]
        return [
            Route("/console", self.page(read, self.home), methods=get),
            Route("/console/", self.page(read, self.home), methods=get),
            Route("/console/login", self.login, methods=["GET", "POST"]),
            Route("/console/logout", self.page(read, self.logout), methods=post),
            Route("/console/dashboard", self.page(read, self.dashboard), methods=get),
            Route("/console/dashboard/figures", self.page(read, self.figures), methods=get),
            Route("/console/messages", self.page(read, self.messages), methods=get),
            Route(
                "/console/messages/export", self.page(read, self.export), methods=["GET", "POST"]
            ),
            Route("/console/messages/replay", self.page(read, self.replay_many), methods=post),
            Route("/console/messages/{id:int}", self.page(read, self.message), methods=get),
            Route(
                "/console/messages/{id:int}/replay", self.page(read, self.replay_one), methods=post
            ),  # fmt: skip
            Route("/console/fhir", self.page(read, self.fhir_types), methods=get),
            Route("/console/fhir/{type}", self.page(read, self.fhir_search), methods=get),
            Route("/console/fhir/{type}/{id}", self.page(read, self.fhir_resource), methods=get),
            Route("/console/fhir/{type}/{id}/diff", self.page(read, self.fhir_diff), methods=get),
            Route("/console/admin", self.page(admin, self.admin), methods=get),
            Route("/console/admin/clients", self.page(admin, self.client_add), methods=post),
            Route("/console/admin/clients/{id}", self.page(admin, self.client_edit), methods=post),
            Route(
                "/console/admin/clients/{id}/revoke",
                self.page(admin, self.client_revoke),
                methods=post,
            ),  # fmt: skip
            Route("/console/admin/users", self.page(admin, self.user_add), methods=post),
            Route(
                "/console/admin/users/{name}/role", self.page(admin, self.user_role), methods=post
            ),  # fmt: skip
            Route(
                "/console/admin/users/{name}/remove",
                self.page(admin, self.user_remove),
                methods=post,
            ),  # fmt: skip
            Route("/console/admin/keys/rotate", self.page(admin, self.keys_rotate), methods=post),
            Route("/console/admin/audit", self.page(admin, self.audit_log), methods=get),
            Mount("/console/static", StaticFiles(directory=STATIC), name="console-static"),
        ]

    # -- signing in -----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        target = _local_target(request.query_params.get("next", ""))
        if request.method == "GET":
            return self._login_form(target)
        try:
            form = await _read_form(request)
        except ValueError as exc:
            return self._login_form(target, str(exc), 400)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        target = _local_target(fields.get("next", ""))
        if not same_token(fields.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            return self._login_form(
                target, "The sign-in form could not be verified (CSRF check); try again.", 403
            )
        address = request.client.host if request.client else "unknown"
        attempt = await run_in_threadpool(
            self.signin.attempt, fields.get("username", ""), fields.get("password", ""), address
        )
        user = attempt.user
        if user is None:
            await run_in_threadpool(
                self.record, None, "console-signin", 401 if not attempt.wait else 429,
                method="POST", address=address,
            )  # fmt: skip
            if attempt.wait:
                response = self._login_form(
                    target, f"Too many failed sign-ins. Try again in {attempt.wait} seconds.", 429
                )
                response.headers["Retry-After"] = str(attempt.wait)
                return response
            return self._login_form(target, "Wrong user name or password.", 401)
        if not CONSOLE.allows(session_grant(user)):
            await run_in_threadpool(
                self.record, None, "console-signin", 403, method="POST", user=user,
                address=address,
            )  # fmt: skip
            return self._login_form(
                target, "This account may not use the console (it needs role admin or "
                "operator).", 403,
            )  # fmt: skip
        token = await run_in_threadpool(
            self.deps.auth.open_session, user.username, CONSOLE_CLIENT, self.deps.session_seconds
        )
        await run_in_threadpool(
            self.record, None, "console-signin", 200, method="POST", user=user, address=address
        )
        response = RedirectResponse(target, 303, HEADERS)
        response.set_cookie(
            SESSION_COOKIE, token, max_age=self.deps.session_seconds, path="/console",
            httponly=True, secure=self.deps.secure_cookies, samesite="strict",
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    def _login_form(self, target: str, error: str = "", status: int = 200) -> Response:
        csrf = secrets.token_urlsafe(24)
        response = self.render("login.html", status, None, error=error, next=target, form_csrf=csrf)
        response.set_cookie(
            LOGIN_COOKIE, csrf, max_age=1800, path="/console", httponly=True,
            secure=self.deps.secure_cookies, samesite="strict",
        )  # fmt: skip
        return response

    def logout(self, call: Call) -> Response:
        self.deps.auth.close_session(call.request.cookies.get(SESSION_COOKIE, ""))
        self.record(call, "console-signout")
        response = RedirectResponse("/console/login", 303, HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    def home(self, call: Call) -> Response:
        return RedirectResponse("/console/dashboard", 303, HEADERS)

    # -- dashboard ------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        data = figures.collect(self.deps.engine)
        data["services"] = self.deps.health()
        return data

    def dashboard(self, call: Call) -> Response:
        self.record(call, "console-dashboard")
        return self.render("dashboard.html", call=call, f=self._figures(), nav="dashboard")

    def figures(self, call: Call) -> Response:
        """The dashboard's figures alone: what the page's script fetches every few seconds."""
        return self.render("figures.html", call=call, f=self._figures())

    # -- messages -------------------------------------------------------------------------

    def messages(self, call: Call) -> Response:
        error = ""
        rows: list[dict[str, Any]] = []
        query = MessageQuery()
        started = time.perf_counter()
        try:
            query = MessageQuery.from_params(call.query)
            rows = search(self.deps.engine, query, 50)
        except QueryError as exc:
            error = str(exc)
        took = (time.perf_counter() - started) * 1000
        self.record(call, "hl7-search")
        params = query.params()
        more = ""
        if len(rows) == 50:
            more = "/console/messages?" + urlencode({**params, "before": rows[-1]["id"]})
        since = int((time.time() - 86400) * 1_000_000)
        return self.render(
            "messages.html", call=call, nav="messages", rows=rows, error=error, q=call.query,
            params=params, more=more, took=took, export_url="/console/messages/export?"
            + urlencode(params), senders=known_senders(self.deps.engine, since),
        )  # fmt: skip

    def message(self, call: Call) -> Response:
        pk = int(call.request.path_params["id"])
        row = self.deps.processor.inbox.get(pk)
        if row is None:
            return self.render("refused.html", 404, call, reason=f"There is no message {pk}.")
        self.record(call, "hl7-read", res_type="HL7 message", res_id=None)
        return self.render(
            "message.html", call=call, nav="messages", m=row,
            raw=row.raw.decode("utf-8", "replace"),
            ack=(row.ack or b"").decode("utf-8", "replace"),
            tree=message_tree(row.raw, row.version),
            outcome=call.query.get("outcome", ""),
        )  # fmt: skip

    def replay_one(self, call: Call) -> Response:
        pk = int(call.request.path_params["id"])
        try:
            status = self.deps.processor.replay(pk)
        except KeyError:
            return self.render("refused.html", 404, call, reason=f"There is no message {pk}.")
        self.record(call, "hl7-replay", res_type="HL7 message")
        return RedirectResponse(
            f"/console/messages/{pk}?" + urlencode({"outcome": status}), 303, HEADERS
        )

    def _selection(self, call: Call) -> MessageQuery:
        """The messages an action is for: the ticked ones ("Replay selected"), or every one
        matching the filters (a form's hidden fields, or a link's query)."""
        if call.request.method == "GET":
            return MessageQuery.from_params(call.query)
        ids = call.form_lists.get("id", [])
        if call.form.get("scope") == "selected":
            if not ids:
                raise QueryError("Tick the messages first (or use the 'all matching' action).")
            return MessageQuery(ids=MessageQuery.from_params({}, ids).ids)
        return MessageQuery.from_params(call.form)

    def replay_many(self, call: Call) -> Response:
        query = self._selection(call)
        if not query.ids and not query.params():
            raise QueryError("Tick messages or set a filter before replaying a set.")
        ids = matching_ids(self.deps.engine, query, MAX_REPLAY + 1)
        more = len(ids) > MAX_REPLAY
        outcomes: list[dict[str, Any]] = []
        for pk in reversed(ids[:MAX_REPLAY]):  # oldest first, as they arrived
            try:
                status = self.deps.processor.replay(pk)
            except KeyError:
                status = "gone"
            row = self.deps.processor.inbox.get(pk)
            outcomes.append({"id": pk, "status": status, "error": row.error if row else ""})
        self.record(call, "hl7-replay", res_type="HL7 message")
        summary: dict[str, int] = {}
        for o in outcomes:
            summary[str(o["status"])] = summary.get(str(o["status"]), 0) + 1
        return self.render(
            "replayed.html", call=call, nav="messages", outcomes=outcomes, summary=summary,
            more=more, limit=MAX_REPLAY,
        )  # fmt: skip

    def export(self, call: Call) -> Response:
        query = self._selection(call)
        self.record(call, "hl7-export", res_type="HL7 message")
        name = datetime.now(UTC).strftime("hl7-export-%Y%m%dT%H%M%SZ.hl7")
        return StreamingResponse(
            export(self.deps.engine, query, MAX_EXPORT),
            media_type="x-application/hl7-v2+er7",
            headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    # -- FHIR browser ---------------------------------------------------------------------

    def _types(self, call: Call) -> list[str]:
        if not self.deps.types:
            status, body = self.deps.fhir(call.grant, ["metadata"], [])
            rest = (body.get("rest") or [{}])[0] if status == 200 else {}
            self.deps.types = sorted(r["type"] for r in rest.get("resource", []) if "type" in r)
        return self.deps.types

    def fhir_types(self, call: Call) -> Response:
        wanted = call.query.get("type", "").strip()
        if wanted:
            target = f"/console/fhir/{wanted}"
            if call.query.get("q"):
                target += "?" + urlencode({"q": call.query["q"]})
            return RedirectResponse(target, 303, HEADERS)
        return self.render("fhir_types.html", call=call, nav="fhir", types=self._types(call))

    def fhir_search(self, call: Call) -> Response:
        res_type = call.request.path_params["type"]
        if res_type not in self._types(call):
            return self.render("refused.html", 404, call, reason=f"Unknown type {res_type}.")
        raw_query = call.query.get("q", "")
        params = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=False)]
        if not any(k == "_count" for k, _ in params):
            params.append(("_count", "20"))
        status, body = self.deps.fhir(call.grant, [res_type], params)
        self.record(call, "search-type", status, res_type=res_type)
        entries = [
            e["resource"] for e in body.get("entry") or []
            if e.get("search", {}).get("mode", "match") == "match" and "resource" in e
        ]  # fmt: skip
        links = {link.get("relation"): link.get("url", "") for link in body.get("link") or []}
        pages = {
            rel: f"/console/fhir/{res_type}?" + urlencode({"q": urlsplit(url).query})
            for rel, url in links.items()
            if rel in ("next", "previous", "prev") and url
        }
        error = "" if status == 200 else _outcome_text(body)
        return self.render(
            "fhir_search.html", call=call, nav="fhir", res_type=res_type, q=raw_query,
            entries=[(r.get("id", ""), _summary(r), r.get("meta", {}).get("lastUpdated", ""))
                     for r in entries],
            total=body.get("total"), pages=pages, error=error, types=self._types(call),
        )  # fmt: skip

    def fhir_resource(self, call: Call) -> Response:
        res_type, res_id = call.request.path_params["type"], call.request.path_params["id"]
        status, body = self.deps.fhir(call.grant, [res_type, res_id], [])
        self.record(call, "read", status, res_type=res_type, res_id=res_id)
        if status != 200:
            return self.render("refused.html", status if status >= 400 else 404, call,
                               reason=_outcome_text(body))  # fmt: skip
        _, history = self.deps.fhir(call.grant, [res_type, res_id, "_history"],
                                    [("_count", "50")])  # fmt: skip
        versions = [
            (e.get("resource", {}).get("meta", {}).get("versionId")
             or e.get("fullUrl", "").rsplit("/", 1)[-1],
             e.get("resource", {}).get("meta", {}).get("lastUpdated", ""),
             e.get("request", {}).get("method", ""))
            for e in history.get("entry") or []
        ]  # fmt: skip
        _, audits = self.deps.fhir(
            call.grant, ["AuditEvent"],
            [("entity", f"{res_type}/{res_id}"), ("_sort", "-date"), ("_count", "20")],
        )  # fmt: skip
        events = [_audit_row(e["resource"]) for e in audits.get("entry") or [] if "resource" in e]
        return self.render(
            "fhir_resource.html", call=call, nav="fhir", res_type=res_type, res_id=res_id,
            json_html=linked_json(body), versions=versions, events=events,
        )  # fmt: skip

    def fhir_diff(self, call: Call) -> Response:
        res_type, res_id = call.request.path_params["type"], call.request.path_params["id"]
        a, b = call.query.get("a", ""), call.query.get("b", "")
        if not (a.isdigit() and b.isdigit()):
            raise QueryError("Choose two versions (a and b) to compare.")
        texts = []
        for version in (a, b):
            status, body = self.deps.fhir(call.grant, [res_type, res_id, "_history", version], [])
            if status != 200:
                return self.render("refused.html", status, call, reason=_outcome_text(body))
            texts.append(json.dumps(body, indent=2, sort_keys=True).splitlines())
        self.record(call, "vread", res_type=res_type, res_id=res_id)
        lines = list(difflib.unified_diff(texts[0], texts[1], f"version {a}", f"version {b}",
                                          lineterm="", n=3))  # fmt: skip
        return self.render(
            "fhir_diff.html", call=call, nav="fhir", res_type=res_type, res_id=res_id, a=a,
            b=b, lines=lines,
        )  # fmt: skip

    # -- administration -------------------------------------------------------------------

    def admin(self, call: Call, message: str = "", error: str = "", secret: str = "",
              status: int = 200) -> Response:  # fmt: skip
        registry = self.deps.auth.registry
        return self.render(
            "admin.html", status, call, nav="admin", clients=registry.clients(),
            users=registry.users(), roles=ROLES, client_types=CLIENT_TYPES, message=message,
            error=error, secret=secret, kids=self._kids(),
        )  # fmt: skip

    def _kids(self) -> list[str]:
        try:
            return [k.get("kid", "") for k in self.deps.auth.keys.jwks().get("keys", [])]
        except Exception:  # noqa: BLE001 - the page shows the rest
            return []

    def _admin_action(self, call: Call, interaction: str, action: Callable[[], str],
                      res_id: str | None = None) -> Response:  # fmt: skip
        try:
            message = action()
        except RegistryError as exc:
            self.record(call, interaction, 400)
            return self.admin(call, error=str(exc), status=400)
        self.record(call, interaction, 200)
        return self.admin(call, message=message)

    def client_add(self, call: Call) -> Response:
        f = call.form
        secret_box: list[str] = []

        def add() -> str:
            client, secret = self.deps.auth.registry.add_client(
                name=f.get("name", ""), client_type=f.get("type", ""),
                redirect_uris=f.get("redirect_uris", "").split(), scope=f.get("scope", ""),
                launch_url=f.get("launch_url") or None, can_launch=f.get("can_launch") == "on",
            )  # fmt: skip
            if secret:
                secret_box.append(secret)
            return f"Client {client.name} registered: client_id {client.client_id}"

        try:
            message = add()
        except RegistryError as exc:
            self.record(call, "client-add", 400)
            return self.admin(call, error=str(exc), status=400)
        self.record(call, "client-add", 201)
        return self.admin(call, message=message, secret=secret_box[0] if secret_box else "")

    def client_edit(self, call: Call) -> Response:
        client_id = call.request.path_params["id"]
        f = call.form

        def edit() -> str:
            client = self.deps.auth.registry.update_client(
                client_id, f.get("redirect_uris", "").split(), f.get("scope", "")
            )
            return f"Client {client.name} updated"

        return self._admin_action(call, "client-update", edit)

    def client_revoke(self, call: Call) -> Response:
        client_id = call.request.path_params["id"]

        def revoke() -> str:
            if not self.deps.auth.remove_client(client_id):
                raise RegistryError(f"no client '{client_id}'")
            return f"Client {client_id} removed; its tokens no longer work"

        return self._admin_action(call, "client-revoke", revoke)

    def user_add(self, call: Call) -> Response:
        f = call.form

        def add() -> str:
            user = self.deps.auth.registry.add_user(
                f.get("username", "").strip(), f.get("password", ""), f.get("role", ""),
                f.get("fhir_user", "").strip() or None,
            )  # fmt: skip
            return f"User {user.username} added with role {user.role}"

        return self._admin_action(call, "user-add", add)

    def user_role(self, call: Call) -> Response:
        name = call.request.path_params["name"]

        def change() -> str:
            if name == call.user.username and call.form.get("role") != "admin":
                raise RegistryError("you cannot take the admin role from yourself")
            user = self.deps.auth.registry.set_role(name, call.form.get("role", ""))
            return f"User {user.username} now has role {user.role}"

        return self._admin_action(call, "user-role", change)

    def user_remove(self, call: Call) -> Response:
        name = call.request.path_params["name"]

        def remove() -> str:
            if name == call.user.username:
                raise RegistryError("you cannot remove yourself")
            if not self.deps.auth.registry.remove_user(name):
                raise RegistryError(f"no user '{name}'")
            return f"User {name} removed"

        return self._admin_action(call, "user-remove", remove)

    def keys_rotate(self, call: Call) -> Response:
        return self._admin_action(
            call, "keys-rotate",
            lambda: f"New signing key {self.deps.auth.keys.rotate()}; older keys still verify",
        )  # fmt: skip

    def audit_log(self, call: Call) -> Response:
        q = call.query
        params: list[tuple[str, str]] = [("_sort", "-date"), ("_count", "50")]
        for name in ("date", "subtype", "outcome", "entity", "agent-name", "altid", "address"):
            value = q.get(name, "").strip()
            if value:
                params.append((name, value))
        if q.get("after"):
            params.append(("date", "ge" + q["after"].strip()))
        if q.get("before"):
            params.append(("date", "lt" + q["before"].strip()))
        status, body = self.deps.fhir(call.grant, ["AuditEvent"], params)
        self.record(call, "search-type", status, res_type="AuditEvent")
        events = [_audit_row(e["resource"]) for e in body.get("entry") or [] if "resource" in e]
        links = {link.get("relation"): link.get("url", "") for link in body.get("link") or []}
        more = ""
        if links.get("next"):
            more = "/console/fhir/AuditEvent?" + urlencode({"q": urlsplit(links["next"]).query})
        return self.render(
            "audit.html", call=call, nav="admin", events=events, q=q, more=more,
            error="" if status == 200 else _outcome_text(body),
        )  # fmt: skip


async def _read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ValueError("Send the form as application/x-www-form-urlencoded")
    if len(await request.body()) > MAX_FORM:
        raise ValueError("The form is too large")
    form = await request.form()
    if any("\x00" in str(v) for v in form.values()):
        raise ValueError("The form holds a NUL character")
    return form


def _local_target(target: str) -> str:
    """Where to go after signing in: a console path on this server, never another site."""
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/dashboard"


def _outcome_text(body: dict[str, Any]) -> str:
    issues = body.get("issue") or []
    texts = [i.get("diagnostics") or i.get("code", "") for i in issues]
    return "; ".join(t for t in texts if t) or "The server refused the request."


def _summary(resource: dict[str, Any]) -> str:
    """A line that tells resources apart: a name, a code's text, a status."""
    parts: list[str] = []
    for name in resource.get("name", [])[:1] if isinstance(resource.get("name"), list) else []:
        if isinstance(name, dict):
            parts.append(" ".join([*name.get("given", []), name.get("family", "")]).strip())
    if isinstance(resource.get("name"), str):
        parts.append(resource["name"])
    code = resource.get("code")
    if isinstance(code, dict):
        codings = [c.get("display") or c.get("code", "") for c in code.get("coding", [])]
        parts.append(code.get("text") or next(iter(codings), ""))
    for key in ("status", "birthDate", "gender"):
        if isinstance(resource.get(key), str):
            parts.append(resource[key])
    subject = resource.get("subject") or resource.get("patient")
    if isinstance(subject, dict) and subject.get("reference"):
        parts.append(subject["reference"])
    return " · ".join(p for p in parts if p)


def _audit_row(event: dict[str, Any]) -> dict[str, Any]:
    agents = event.get("agent") or []
    who = ""
    for agent in agents:
        if agent.get("requestor"):
            w = agent.get("who") or {}
            who = agent.get("name") or w.get("reference") or w.get("display") or ""
            who = agent.get("altId") or who
    return {
        "id": event.get("id", ""),
        "recorded": event.get("recorded", ""),
        "subtype": ", ".join(s.get("code", "") for s in event.get("subtype") or []),
        "action": event.get("action", ""),
        "outcome": event.get("outcome", ""),
        "desc": event.get("outcomeDesc", ""),
        "who": who,
        "entities": [
            e.get("what", {}).get("reference") or e.get("what", {}).get("display", "")
            for e in event.get("entity") or []
        ],
    }


_REFERENCE = re.compile(r'("reference": )"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})"')


def linked_json(resource: dict[str, Any]) -> Markup:
    """The resource as indented JSON, escaped, with each relative reference a link."""
    text = json.dumps(resource, indent=2, ensure_ascii=False)
    out: list[str] = []
    last = 0
    for match in _REFERENCE.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        ref = match.group(2)
        out.append(
            f'{escape(match.group(1))}"<a href="/console/fhir/{escape(ref)}">{escape(ref)}</a>"'
        )
        last = match.end()
    out.append(str(escape(text[last:])))
    return Markup("".join(out))  # noqa: S704 - every piece above is escaped
