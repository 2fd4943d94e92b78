# ruff: noqa: E501 - canned OpenEMR messages are kept verbatim, on one line each
"""A faithful OpenEMR simulator (ASGI), built from ../shared/reference/openemr/README.md.

It reproduces what the connector must survive: the `{site}` segment, three response styles
(envelope with real status; envelope always 200; bare arrays with an empty 404), 400
`invalid or nonexisting value` for unknown patient uuids, validationErrors as an object with
Particle-style messages, `404 []` from the FHIR API, `{pid, uuid}` from POST /fhir/Patient,
OAuth2 password (only when enabled, user_role=users) / refresh / client_credentials with a
private_key_jwt assertion for read-only system/* scopes, disabled clients, and the SMART EHR
launch with an opaque launch token through its own authorize/token endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import html
import json
import re
import secrets
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PATIENT_FILTERS = {"fname", "lname", "ss", "street", "postal_code", "city", "state",
                   "phone_home", "phone_biz", "phone_cell", "sex", "country_code", "email", "DOB"}  # fmt: skip
PATIENT_COLUMNS = ["title", "fname", "mname", "lname", "DOB", "sex", "street", "postal_code",
                   "city", "state", "country_code", "phone_home", "phone_biz", "phone_cell",
                   "phone_contact", "email", "ss", "pubpid", "status", "race", "ethnicity",
                   "deceased_date"]  # fmt: skip
LABELS = {"fname": "First Name", "lname": "Last Name", "DOB": "Date of Birth", "sex": "Gender"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ROUTE_NOT_FOUND = {"error": "An error occurred", "message": "Route not found", "code": 0}


@functools.cache
def _signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "sim-key", "alg": "RS256"})


def envelope(data: Any, status: int = 200, errors: Any = None) -> JSONResponse:
    body = {"validationErrors": errors or [], "internalErrors": [], "data": data, "links": []}
    return JSONResponse(body, status)


def nonexisting(value: str) -> dict[str, Any]:
    return {"uuid": {"invalid or nonexisting value": f" value {value}"}}


@dataclass
class SimClient:
    client_id: str
    secret: str | None = None
    public_jwk: dict[str, Any] | None = None
    enabled: bool = True
    scope: str = ""
    redirect_uris: list[str] = field(default_factory=list)
    initiate_login_uri: str = ""


@dataclass
class SimToken:
    kind: str  # password, code, client_credentials
    client_id: str
    scope: str
    expires: float
    user: str | None = None


class OpenEmrSimulator:
    def __init__(self, site: str = "default") -> None:
        self.site = site
        self.base = "http://openemr.test"
        self.password_grant = True
        self.offset = 0.0  # test clock shift, seconds
        self.patients: dict[str, dict[str, Any]] = {}  # uuid -> patient_data row
        self.encounters: list[dict[str, Any]] = []
        self.vital_rows: list[dict[str, Any]] = []
        self.lists: list[dict[str, Any]] = []  # medical_problem / allergy / medication
        self.prescription_rows: list[dict[str, Any]] = []
        self.clients: dict[str, SimClient] = {}
        self.users: dict[str, dict[str, str]] = {}
        self.tokens: dict[str, SimToken] = {}
        self.refresh_tokens: dict[str, SimToken] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.launches: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, str] = {}
        self.used_jti: set[str] = set()
        self.fail_next: list[int] = []  # statuses to answer before serving normally
        self.delay_next: list[float] = []  # seconds to stall before answering (timeouts)
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.token_requests: list[dict[str, str]] = []
        self.key = _signing_key()
        self.lock = threading.Lock()

    # -- test helpers ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/apis/{self.site}/fhir"

    def add_patient(self, **row: Any) -> dict[str, Any]:
        pid = max((int(p["pid"]) for p in self.patients.values()), default=0) + 1
        full = {c: "" for c in PATIENT_COLUMNS} | {"deceased_date": None}
        full |= {k: v for k, v in row.items() if v is not None}
        full["pid"] = pid
        full["id"] = pid
        full.setdefault("uuid", str(uuidlib.uuid4()))
        if not full.get("uuid"):
            full["uuid"] = str(uuidlib.uuid4())
        self.patients[full["uuid"]] = full
        return full

    def add_encounter(self, patient: dict[str, Any], **row: Any) -> dict[str, Any]:
        eid = len(self.encounters) + 1
        full = {"id": eid, "uuid": str(uuidlib.uuid4()), "encounter": 1000 + eid,
                "pid": patient["pid"], "puuid": patient["uuid"], "date": "2026-01-02 09:00:00",
                "reason": "", "facility": "Your Clinic", "class_code": "AMB",
                "pc_catname": "Office Visit"} | row  # fmt: skip
        self.encounters.append(full)
        return full

    def add_vitals(self, encounter: dict[str, Any], **row: Any) -> dict[str, Any]:
        full = {"id": len(self.vital_rows) + 1, "uuid": str(uuidlib.uuid4()),
                "pid": encounter["pid"], "eid": encounter["encounter"],
                "date": encounter["date"]} | row  # fmt: skip
        self.vital_rows.append(full)
        return full

    def add_list(self, patient: dict[str, Any], kind: str, **row: Any) -> dict[str, Any]:
        full = {"id": len(self.lists) + 1, "uuid": str(uuidlib.uuid4()), "type": kind,
                "pid": patient["pid"], "puuid": patient["uuid"], "enddate": None} | row  # fmt: skip
        self.lists.append(full)
        return full

    def add_prescription(self, patient: dict[str, Any], **row: Any) -> dict[str, Any]:
        full = {"id": len(self.prescription_rows) + 1, "uuid": str(uuidlib.uuid4()),
                "patient_id": patient["pid"], "puuid": patient["uuid"], "active": 1} | row  # fmt: skip
        self.prescription_rows.append(full)
        return full

    def add_client(self, client_id: str | None = None, **kwargs: Any) -> SimClient:
        client = SimClient(client_id or secrets.token_urlsafe(12), **kwargs)
        self.clients[client.client_id] = client
        return client

    def add_user(self, username: str, password: str, fhir_user: str | None = None,
                 user_type: str = "Physician") -> None:  # fmt: skip
        self.users[username] = {
            "password": password,
            "fhirUser": fhir_user or f"{self.fhir_base}/Practitioner/{uuidlib.uuid4()}",
            "type": user_type,
        }

    def launch_url(
        self, client_id: str, patient_uuid: str, encounter_uuid: str | None = None
    ) -> str:
        """What the dashboard's "SMART Enabled Apps" card puts in its iframe."""
        opaque = base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")
        self.launches[opaque] = {"patient": patient_uuid, "encounter": encounter_uuid,
                                 "intent": "patient.demographics.dialog"}  # fmt: skip
        client = self.clients[client_id]
        query = urlencode({"launch": opaque, "iss": self.fhir_base, "aud": self.fhir_base})
        return f"{client.initiate_login_uri}?{query}"

    # -- the app --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        s = "{site}"
        routes = [
            Route(f"/oauth2/{s}/token", self.token, methods=["POST"]),
            Route(f"/oauth2/{s}/authorize", self.authorize, methods=["GET", "POST"]),
            Route(f"/oauth2/{s}/login", self.login, methods=["POST"]),
            Route(f"/oauth2/{s}/jwk", self.jwk),
            Route(f"/oauth2/{s}/.well-known/openid-configuration", self.openid_configuration),
            Route(f"/apis/{s}/fhir/.well-known/smart-configuration", self.smart_configuration),
            Route(f"/apis/{s}/fhir/metadata", self.metadata),
            Route(f"/apis/{s}/fhir/Patient", self.fhir_patients, methods=["GET", "POST"]),
            Route(f"/apis/{s}/fhir/Patient/{{id}}", self.fhir_patient),
            Route(f"/apis/{s}/api/patient", self.api_patients, methods=["GET", "POST"]),
            Route(f"/apis/{s}/api/patient/{{puuid}}", self.api_patient),
            Route(f"/apis/{s}/api/patient/{{puuid}}/encounter", self.api_encounters),
            Route(f"/apis/{s}/api/patient/{{puuid}}/medical_problem", self.api_problems),
            Route(f"/apis/{s}/api/patient/{{puuid}}/allergy", self.api_allergies),
            Route(f"/apis/{s}/api/patient/{{pid}}/encounter/{{eid}}/vital", self.api_vitals),
            Route(f"/apis/{s}/api/patient/{{pid}}/medication", self.api_medications),
            Route(f"/apis/{s}/api/prescription", self.api_prescriptions),
            Route("/interface/login/login.php", self.ehr_login, methods=["GET", "POST"]),
            Route("/interface/patient_file/summary/demographics.php", self.dashboard),
        ]
        app = Starlette(routes=routes)
        sim = self

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                sim.log.append((scope["method"], scope["path"]))
                if sim.delay_next:
                    await asyncio.sleep(sim.delay_next.pop(0))
                if sim.fail_next:
                    status = sim.fail_next.pop(0)
                    await Response("upstream trouble", status)(scope, receive, send)
                    return
                site = scope["path"].split("/")[2] if scope["path"].count("/") > 2 else ""
                if site != sim.site and not scope["path"].startswith("/interface/"):
                    await JSONResponse(ROUTE_NOT_FOUND, 404)(scope, receive, send)
                    return
            await app(scope, receive, send)

        return asgi  # type: ignore[return-value]

    # -- OAuth2 ---------------------------------------------------------------------------------

    async def openid_configuration(self, request: Request) -> Response:
        root = f"{self.base}/oauth2/{self.site}"
        return JSONResponse({"issuer": root, "authorization_endpoint": f"{root}/authorize",
                             "token_endpoint": f"{root}/token", "jwks_uri": f"{root}/jwk"})  # fmt: skip

    async def smart_configuration(self, request: Request) -> Response:
        root = f"{self.base}/oauth2/{self.site}"
        return JSONResponse(
            {
                "issuer": self.fhir_base,
                "jwks_uri": f"{root}/jwk",
                "authorization_endpoint": f"{root}/authorize",
                "token_endpoint": f"{root}/token",
                "introspection_endpoint": f"{root}/introspect",
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
                "capabilities": [
                    "launch-ehr",
                    "context-ehr-patient",
                    "context-ehr-encounter",
                    "client-confidential-symmetric",
                    "sso-openid-connect",
                ],  # fmt: skip
                "scopes_supported": [["openid", "fhirUser", "launch", "api:fhir"]],
            }
        )

    async def metadata(self, request: Request) -> Response:
        return JSONResponse({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})

    async def jwk(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    def _oauth_error(
        self, error: str, description: str, status: int = 400, hint: str = ""
    ) -> Response:
        body = {"error": error, "error_description": description, "message": description}
        if hint:
            body["hint"] = hint
        return JSONResponse(body, status)

    def _authenticate(self, form: dict[str, str], request: Request) -> SimClient | Response:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        client = self.clients.get(client_id)
        bad = self._oauth_error("invalid_client", "Client authentication failed", 401)
        if client is None:
            return bad
        if not client.enabled:
            return self._oauth_error(
                "invalid_client", "Client authentication failed", 401, "Client is disabled"
            )
        if form.get("client_assertion_type") == ASSERTION_TYPE:
            return client if self._assertion_ok(client, form.get("client_assertion", "")) else bad
        if client.secret is not None and secret != client.secret:
            return bad
        return client

    def _assertion_ok(self, client: SimClient, assertion: str) -> bool:
        if client.public_jwk is None:
            return False
        try:
            token = jwt.decode(
                assertion,
                KeySet.import_key_set({"keys": [client.public_jwk]}),
                algorithms=["RS384", "ES384"],
            )
        except (JoseError, ValueError):
            return False
        claims = token.claims
        audience = f"{self.base}/oauth2/{self.site}/token"
        jti = str(claims.get("jti", ""))
        ok = (
            token.header.get("alg") in ("RS384", "ES384")
            and claims.get("iss") == client.client_id == claims.get("sub")
            and claims.get("aud") == audience
            and int(claims.get("exp", 0)) > self.now()
            and jti
            and jti not in self.used_jti
        )
        self.used_jti.add(jti)
        return bool(ok)

    def _issue(self, kind: str, client: SimClient, scope: str, lifetime: int,
               user: str | None = None, extra: dict[str, Any] | None = None) -> Response:  # fmt: skip
        access = secrets.token_urlsafe(32)
        info = SimToken(kind, client.client_id, scope, self.now() + lifetime, user)
        self.tokens[access] = info
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime,
                                "access_token": access, "scope": scope}  # fmt: skip
        if "offline_access" in scope.split():
            refresh = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = info
            body["refresh_token"] = refresh
        return JSONResponse(body | (extra or {}))

    async def token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        grant = form.get("grant_type", "")
        if grant == "password" and not self.password_grant:
            return self._oauth_error(
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                hint="Check that all required parameters have been provided",
            )
        client = self._authenticate(form, request)
        if isinstance(client, Response):
            return client
        if grant == "password":
            if form.get("user_role") != "users":
                return self._oauth_error("invalid_request", "user_role must be users")
            user = self.users.get(form.get("username", ""))
            if user is None or user["password"] != form.get("password"):
                return self._oauth_error("invalid_grant", "The user credentials were incorrect.")
            return self._issue("password", client, form.get("scope", ""), 3600, form["username"])
        if grant == "refresh_token":
            info = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if info is None or info.client_id != client.client_id:
                return self._oauth_error("invalid_grant", "The refresh token is invalid.")
            return self._issue(info.kind, client, info.scope, 3600, info.user)
        if grant == "client_credentials":
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return self._oauth_error(
                    "invalid_client", "client_credentials needs a private_key_jwt assertion", 401
                )
            scopes = form.get("scope", "").split()
            if not scopes or not all(
                re.match(r"^system/(\*|[A-Za-z]+)\.(read|rs|r|s|\$export)$", s) for s in scopes
            ):
                return self._oauth_error(
                    "invalid_scope", "Only read-only system/* scopes are allowed"
                )
            return self._issue("client_credentials", client, " ".join(scopes), 300)
        if grant == "authorization_code":
            return self._code_grant(client, form)
        return self._oauth_error("unsupported_grant_type", f"grant_type {grant} not supported")

    def _code_grant(self, client: SimClient, form: dict[str, str]) -> Response:
        code = self.codes.pop(form.get("code", ""), None)
        if code is None or code["client_id"] != client.client_id:
            return self._oauth_error("invalid_grant", "Authorization code is invalid")
        if code["redirect_uri"] != form.get("redirect_uri"):
            return self._oauth_error("invalid_grant", "redirect_uri mismatch")
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if digest.decode().rstrip("=") != code["challenge"]:
            return self._oauth_error("invalid_grant", "Failed to verify `code_verifier`.")
        user = self.users[code["user"]]
        extra: dict[str, Any] = {"need_patient_banner": False,
                                 "smart_style_url": f"{self.base}/public/smart-styles/style.json"}  # fmt: skip
        launch = code.get("launch")
        if launch:
            extra |= {"patient": launch["patient"], "intent": launch["intent"]}
            if launch.get("encounter"):
                extra["encounter"] = launch["encounter"]
        now = int(self.now())
        claims = {"iss": f"{self.base}/oauth2/{self.site}", "aud": client.client_id,
                  "sub": code["user"], "iat": now, "exp": now + 3600,
                  "fhirUser": user["fhirUser"], "api:user_type": user["type"]}  # fmt: skip
        extra["id_token"] = jwt.encode({"alg": "RS256", "kid": "sim-key"}, claims, self.key)
        return self._issue("code", client, code["scope"], 3600, code["user"], extra)

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            params |= {k: str(v) for k, v in (await request.form()).items()}
        client = self.clients.get(params.get("client_id", ""))
        if client is None or params.get("redirect_uri") not in client.redirect_uris:
            return HTMLResponse("<p>invalid client or redirect_uri</p>", 400)
        if not client.enabled:
            return HTMLResponse("<p>Client is disabled</p>", 401)
        checks = {
            "response_type must be code": params.get("response_type") == "code",
            "aud must be the FHIR base": params.get("aud") == self.fhir_base,
            "PKCE S256 required": params.get("code_challenge_method") == "S256"
            and bool(params.get("code_challenge")),
            "state required": bool(params.get("state")),
        }
        launch = None
        if "launch" in params.get("scope", "").split():
            launch = self.launches.pop(params.get("launch", ""), None)
            checks["unknown launch"] = launch is not None
        for message, ok in checks.items():
            if not ok:
                query = urlencode({"error": "invalid_request", "error_description": message,
                                   "state": params.get("state", "")})  # fmt: skip
                return RedirectResponse(f"{params['redirect_uri']}?{query}", 302)
        pending_id = secrets.token_urlsafe(16)
        self.pending[pending_id] = params | {"launch_ctx": launch}
        user = self.sessions.get(request.cookies.get("OpenEMR", ""))
        if user is None:
            return HTMLResponse(
                "<form method=post action=login>"
                f'<input type=hidden name=pending value="{html.escape(pending_id)}">'
                "<input name=username><input type=password name=password>"
                "<button type=submit>Login</button></form>"
            )
        return self._finish(pending_id, user)

    async def login(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        user = self.users.get(form.get("username", ""))
        if user is None or user["password"] != form.get("password"):
            return HTMLResponse("<p>Invalid username or password</p>", 401)
        session = secrets.token_urlsafe(16)
        self.sessions[session] = form["username"]
        response = self._finish(form.get("pending", ""), form["username"])
        response.set_cookie("OpenEMR", session, httponly=True, secure=True, samesite="none")
        return response

    def _finish(self, pending_id: str, user: str) -> Response:
        params = self.pending.pop(pending_id, None)
        if params is None:
            return HTMLResponse("<p>expired</p>", 400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"client_id": params["client_id"], "redirect_uri": params["redirect_uri"],
                            "challenge": params["code_challenge"], "scope": params.get("scope", ""),
                            "user": user, "launch": params.get("launch_ctx")}  # fmt: skip
        query = urlencode({"code": code, "state": params["state"]})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", 302)

    def _bearer(self, request: Request, fhir: bool) -> SimToken | Response:
        header = request.headers.get("authorization", "")
        info = self.tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if info is None or info.expires < self.now():
            return JSONResponse(
                {"error": "access_denied",
                 "error_description": "The resource owner or authorization server denied the request.",
                 "hint": "Missing \"Authorization\" header" if not header else "The JWT is invalid",
                 "message": "The resource owner or authorization server denied the request."},
                401,
            )  # fmt: skip
        scopes = info.scope.split()
        allowed = (
            ("api:fhir" in scopes or info.kind == "client_credentials")
            if fhir
            else ("api:oemr" in scopes and info.kind != "client_credentials")
        )
        if not allowed:
            return JSONResponse(
                {"error": "An error occurred",
                 "message": "Organization policy does not have permit access resource", "code": 0},
                403,
            )  # fmt: skip
        return info

    # -- the EHR itself: login and the patient dashboard with its SMART app card ---------------

    async def ehr_login(self, request: Request) -> Response:
        """OpenEMR's login page; the session it opens is the one its authorize endpoint sees."""
        if request.method == "GET":
            follow = html.escape(request.query_params.get("next", ""))
            return HTMLResponse(
                "<!doctype html><title>OpenEMR Login</title><form method=post>"
                f'<input type=hidden name=next value="{follow}">'
                "<input name=authUser><input type=password name=clearPass>"
                "<button type=submit>Login</button></form>"
            )
        form = {k: str(v) for k, v in (await request.form()).items()}
        user = self.users.get(form.get("authUser", ""))
        if user is None or user["password"] != form.get("clearPass"):
            return HTMLResponse("<p>Invalid username or password</p>", 401)
        session = secrets.token_urlsafe(16)
        self.sessions[session] = form["authUser"]
        response = RedirectResponse(form.get("next") or "/interface/main/tabs/main.php", 302)
        response.set_cookie("OpenEMR", session, httponly=True, secure=True, samesite="none")
        return response

    async def dashboard(self, request: Request) -> Response:
        """The patient dashboard: the "SMART Enabled Apps" card opens the app in an iframe."""
        if self.sessions.get(request.cookies.get("OpenEMR", "")) is None:
            return HTMLResponse("<p>Not logged in</p>", 401)
        src = self.launch_url(request.query_params["client_id"], request.query_params["puuid"])
        return HTMLResponse(
            "<!doctype html><title>Patient dashboard</title><h1>Dashboard</h1>"
            f'<iframe id=smart-app width=800 height=600 src="{html.escape(src)}"></iframe>'
        )

    # -- Standard REST API ----------------------------------------------------------------------

    @staticmethod
    def _api_row(row: dict[str, Any]) -> dict[str, Any]:
        """Numeric columns come back as strings, like PHP's PDO."""
        return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                for k, v in row.items() if k != "puuid"}  # fmt: skip

    async def api_patients(self, request: Request) -> Response:
        auth = self._bearer(request, fhir=False)
        if isinstance(auth, Response):
            return auth
        if request.method == "POST":
            return self._create_patient(await request.json())
        query = dict(request.query_params)
        rows = sorted(self.patients.values(), key=lambda r: int(r["pid"]))
        for key, value in query.items():
            if key in PATIENT_FILTERS:  # other parameters (pubpid!) are silently ignored
                rows = [r for r in rows if str(r.get(key, "")).lower() == value.lower()]
        offset, limit = int(query.get("_offset", 0)), int(query.get("_limit", 0) or 10**6)
        return envelope([self._api_row(r) for r in rows[offset : offset + limit]])

    def _create_patient(self, body: dict[str, Any]) -> Response:
        errors: dict[str, dict[str, str]] = {}
        for key, low in (("fname", 1), ("lname", 2), ("sex", 4)):
            value = body.get(key)
            label = LABELS[key]
            if value is None:
                errors[key] = {
                    "Required::NON_EXISTENT_KEY": f"{label} must be provided, but does not exist"
                }
            elif len(str(value)) < low:
                errors[key] = {
                    "LengthBetween::TOO_SHORT": f"{label} must be {low} characters or longer"
                }
            elif len(str(value)) > (30 if key == "sex" else 255):
                errors[key] = {"LengthBetween::TOO_LONG": f"{label} must be shorter"}  # fmt: skip
        dob = body.get("DOB")
        if dob is None:
            errors["DOB"] = {
                "Required::NON_EXISTENT_KEY": "Date of Birth must be provided, but does not exist"
            }
        elif not re.match(r"^\d{4}-\d{2}-\d{2}$", str(dob)):
            errors["DOB"] = {"Datetime::INVALID_VALUE": "Date of Birth must be a valid date"}  # fmt: skip
        if errors:
            return envelope([], 400, errors)
        row = self.add_patient(**{k: v for k, v in body.items() if k in PATIENT_COLUMNS})
        return envelope({"pid": row["pid"], "uuid": row["uuid"]}, 201)

    async def api_patient(self, request: Request) -> Response:
        auth = self._bearer(request, fhir=False)
        if isinstance(auth, Response):
            return auth
        puuid = request.path_params["puuid"]
        row = self.patients.get(puuid)
        if row is None:
            return envelope([], 400, nonexisting(puuid))
        return envelope(self._api_row(row))

    def _style2(self, request: Request, rows: list[dict[str, Any]]) -> Response:
        """encounter / medical_problem / allergy: the envelope, and always HTTP 200."""
        auth = self._bearer(request, fhir=False)
        if isinstance(auth, Response):
            return auth
        puuid = request.path_params["puuid"]
        if puuid not in self.patients:
            return envelope([], 200, nonexisting(puuid))
        return envelope([self._api_row(r) for r in rows if r.get("puuid") == puuid], 200)

    async def api_encounters(self, request: Request) -> Response:
        return self._style2(request, self.encounters)

    async def api_problems(self, request: Request) -> Response:
        return self._style2(request, [r for r in self.lists if r["type"] == "medical_problem"])

    async def api_allergies(self, request: Request) -> Response:
        return self._style2(request, [r for r in self.lists if r["type"] == "allergy"])

    def _rows(self, request: Request, rows: list[dict[str, Any]]) -> Response:
        """vital / medication: bare arrays; nothing found is 404 with an empty body."""
        auth = self._bearer(request, fhir=False)
        if isinstance(auth, Response):
            return auth
        if not rows:
            return Response(b"", 404)
        return JSONResponse([self._api_row(r) for r in rows])

    async def api_vitals(self, request: Request) -> Response:
        pid, eid = request.path_params["pid"], request.path_params["eid"]
        return self._rows(request, [r for r in self.vital_rows
                                    if str(r["pid"]) == pid and str(r["eid"]) == eid])  # fmt: skip

    async def api_medications(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        return self._rows(request, [r for r in self.lists
                                    if r["type"] == "medication" and str(r["pid"]) == pid])  # fmt: skip

    async def api_prescriptions(self, request: Request) -> Response:
        auth = self._bearer(request, fhir=False)
        if isinstance(auth, Response):
            return auth
        return envelope([self._api_row(r) for r in self.prescription_rows])

    # -- FHIR API -------------------------------------------------------------------------------

    def _fhir_patient(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Patient", "id": row["uuid"],
                "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00+00:00"},
                "identifier": [{"system": "http://terminology.hl7.org/ValueSet/v2-0203",
                                "value": row.get("pubpid", "")}],
                "name": [{"use": "official", "family": row["lname"],
                          "given": [g for g in (row["fname"], row.get("mname")) if g]}],
                "gender": {"Female": "female", "Male": "male"}.get(row.get("sex", ""), "unknown"),
                "birthDate": row.get("DOB")}  # fmt: skip

    async def fhir_patient(self, request: Request) -> Response:
        auth = self._bearer(request, fhir=True)
        if isinstance(auth, Response):
            return auth
        res_id = request.path_params["id"]
        if not UUID_RE.match(res_id):
            return JSONResponse({"validationErrors": {"_id": "The search field argument was invalid, improperly formatted, or could not be parsed.  Inner message: UUID columns must be a valid UUID string"}}, 400)  # fmt: skip
        row = self.patients.get(res_id)
        if row is None:
            return JSONResponse([], 404)
        return JSONResponse(self._fhir_patient(row))

    async def fhir_patients(self, request: Request) -> Response:
        auth = self._bearer(request, fhir=True)
        if isinstance(auth, Response):
            return auth
        if request.method == "POST":
            if auth.kind == "client_credentials":
                return JSONResponse({"error": "access_denied", "message": "read-only"}, 403)
            resource = await request.json()
            name = (resource.get("name") or [{}])[0]
            row = self.add_patient(fname=(name.get("given") or [""])[0], lname=name.get("family", ""),
                                   DOB=resource.get("birthDate"), sex="Unknown")  # fmt: skip
            return JSONResponse({"pid": row["pid"], "uuid": row["uuid"]}, 201)
        ident = request.query_params.get("identifier")
        rows = list(self.patients.values())
        if ident:
            rows = [r for r in rows if ident in (r.get("ss"), r.get("pubpid"))]
        return JSONResponse(
            {"resourceType": "Bundle", "type": "searchset", "total": len(rows),
             "entry": [{"fullUrl": f"{self.fhir_base}/Patient/{r['uuid']}",
                        "resource": self._fhir_patient(r)} for r in rows]}
        )  # fmt: skip


class ServedSimulator:
    """The simulator on a real loopback port (uvicorn in a thread), for browser-like flows;
    with a certificate and key it serves HTTPS."""

    def __init__(
        self, sim: OpenEmrSimulator, port: int = 0, tls: tuple[str, str] | None = None
    ) -> None:
        import socket

        self.sim = sim
        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        sim.base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        config = uvicorn.Config(sim.app(), host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off", ssl_certfile=tls[0] if tls else None,
                                ssl_keyfile=tls[1] if tls else None)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedSimulator:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("simulator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def to_json(value: Any) -> str:
    return json.dumps(value)
