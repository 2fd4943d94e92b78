"""The EHR-launch broker: a SMART app launched from OpenEMR's chart reads *this* server.

OpenEMR launches an app with its own `iss` and an opaque `launch` only it can read, so we
complete OpenEMR's authorization as a confidential client (PKCE, launch, state), take
`patient`, `encounter` and the id_token's `fhirUser`, map them to the canonical Patient (synced
on the spot if new) and a local user (created on first sight), start our own EHR launch for the
hosted app the operator configured, and open a session so our authorize endpoint asks for no
second login. OpenEMR tokens stay here: the app only ever gets tokens of this server.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, insert, select

import outbound
from fhir_server.store.db import write_transaction
from fhir_server.store.repository import HasStore
from mappers.openemr import Systems
from openemr_bridge import canonical
from openemr_bridge.config import LAUNCH_SCOPE
from openemr_bridge.errors import OpenEmrError
from openemr_bridge.models import launches
from openemr_bridge.sync import Syncer
from outbound import Policy
from smart_auth.hashing import token_hash
from smart_auth.registry import RegistryError
from smart_auth.server import AuthServer

STATE_SECONDS = 600


class LaunchError(Exception):
    """Shown to the clinician (in the iframe) as a page; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Started:
    redirect: str  # OpenEMR's authorize URL
    browser: str  # cookie value binding the callback to this browser


@dataclass
class Finished:
    redirect: str  # the hosted app's launch URL, iss = our FHIR base
    session: str  # our SSO session cookie value
    patient_id: str
    username: str


@dataclass
class LaunchSettings:
    client_id: str
    client_secret: str
    redirect_uri: str  # our /openemr/callback
    allowed_iss: list[str]
    app_client: str  # our hosted app to launch
    roles: dict[str, str]
    systems: Systems
    session_seconds: int = 600
    scope: str = LAUNCH_SCOPE
    verify: Any = True
    timeout: float = 30.0
    outbound: Policy | None = None  # INTEROP_OUTBOUND_*; None: defaults from `timeout`


class LaunchBridge:
    def __init__(
        self, settings: LaunchSettings, auth: AuthServer, ctx: HasStore, syncer: Syncer | None
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.ctx = ctx
        self.syncer = syncer
        self.engine = auth.engine

    # -- /openemr/launch ------------------------------------------------------------------------

    def start(self, iss: str, launch: str) -> Started:
        iss = iss.rstrip("/")
        if iss not in self.settings.allowed_iss:
            raise LaunchError(f"This server does not accept launches from {iss}.", 403)
        if not launch or len(launch) > 4096:
            raise LaunchError("The launch parameter is missing.")
        if (
            not self.settings.app_client
            or self.auth.registry.client(self.settings.app_client) is None
        ):
            raise LaunchError(
                "No app is configured for OpenEMR launches (INTEROP_OPENEMR_LAUNCH_CLIENT).", 500
            )
        config = self._discover(iss)
        state, browser = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            conn.execute(delete(launches).where(launches.c.expires < now))
            conn.execute(
                insert(launches).values(
                    state=state,
                    browser=token_hash(browser),
                    iss=iss,
                    verifier=verifier,
                    token_endpoint=config["token_endpoint"],
                    expires=now + STATE_SECONDS,
                )
            )
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": self.settings.scope,
            "state": state,
            "aud": iss,
            "launch": launch,
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
        }
        return Started(f"{config['authorization_endpoint']}?{urlencode(query)}", browser)

    def _discover(self, iss: str) -> dict[str, Any]:
        url = f"{iss}/.well-known/smart-configuration"
        try:
            with self._http() as http:
                body = http.get(url, headers={"Accept": "application/json"}).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LaunchError(
                f"OpenEMR's smart-configuration could not be read ({type(exc).__name__}).", 502
            ) from exc
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("authorization_endpoint", "token_endpoint")
        ):
            raise LaunchError("OpenEMR's smart-configuration lacks its endpoints.", 502)
        return body

    def _http(self) -> httpx.Client:
        """To OpenEMR through the outbound client (its launch issuers are allowed hosts)."""
        policy = self.settings.outbound or Policy("OpenEMR", read_timeout=self.settings.timeout)
        return outbound.Client(policy.allowing(*self.settings.allowed_iss),
                               verify=self.settings.verify)  # fmt: skip

    # -- /openemr/callback ----------------------------------------------------------------------

    def finish(self, params: dict[str, str], browser: str | None) -> Finished:
        pending = self._take(params.get("state", ""), browser)
        if params.get("error"):
            raise LaunchError(
                f"OpenEMR refused the launch: {params.get('error_description') or params['error']}",
                403,
            )
        answer = self._exchange(pending, params.get("code", ""))
        patient_uuid = str(answer.get("patient") or "")
        if not patient_uuid:
            raise LaunchError("OpenEMR gave no patient for this launch; open the app from a chart.")
        claims = self._id_token(pending["iss"], str(answer.get("id_token") or ""))
        username = self._user(str(claims.get("fhirUser") or ""), str(claims.get("sub") or ""))
        patient_id = self._patient(patient_uuid)
        encounter_id = self._encounter(str(answer.get("encounter") or ""))
        _, url = self.auth.create_launch(
            self.settings.app_client,
            patient_id,
            encounter_id,
            username,
            str(answer.get("intent") or "")[:64] or None,
        )
        if not url:
            raise LaunchError(
                "The configured app has no launch URL (interop clients add --launch-url).", 500
            )
        session = self.auth.open_session(
            username, self.settings.app_client, self.settings.session_seconds
        )
        return Finished(url, session, patient_id, username)

    def _take(self, state: str, browser: str | None) -> dict[str, Any]:
        """The launch this callback belongs to, once, and only in the browser that started it."""
        with write_transaction(self.engine) as conn:  # read, then delete: one writer at a time
            row = conn.execute(select(launches).where(launches.c.state == state[:64])).first()
            if row is not None:
                conn.execute(delete(launches).where(launches.c.state == row.state))
        if row is None or row.expires < time.time():
            raise LaunchError("This launch expired or was already used; open the app again.")
        if not browser or token_hash(browser) != row.browser:
            raise LaunchError("This launch was started in another browser.", 403)
        return dict(row._mapping)

    def _exchange(self, pending: dict[str, Any], code: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": pending["verifier"],
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        try:
            with self._http() as http:
                response = http.post(pending["token_endpoint"], data=form)
        except httpx.HTTPError as exc:
            raise LaunchError(
                f"OpenEMR's token endpoint is unreachable ({type(exc).__name__}).", 502
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            said = (
                body.get("error_description") or body.get("error") if isinstance(body, dict) else ""
            )
            raise LaunchError(
                f"OpenEMR's token endpoint answered {response.status_code}: {said}", 502
            )
        return body

    def _id_token(self, iss: str, id_token: str) -> dict[str, Any]:
        """fhirUser comes from the id_token, whose signature is checked against OpenEMR's keys."""
        if not id_token:
            raise LaunchError(
                "OpenEMR sent no id_token (the openid and fhirUser scopes are needed).", 502
            )
        config = self._discover(iss)
        try:
            with self._http() as http:
                keys = KeySet.import_key_set(http.get(config["jwks_uri"]).json())
            token = jwt.decode(id_token, keys, algorithms=["RS256", "RS384", "ES256", "ES384"])
        except (httpx.HTTPError, JoseError, ValueError, KeyError, TypeError) as exc:
            raise LaunchError(
                f"OpenEMR's id_token could not be verified ({type(exc).__name__}).", 502
            ) from exc
        claims = dict(token.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences or int(claims.get("exp", 0)) < time.time():
            raise LaunchError("OpenEMR's id_token is not for this client or has expired.", 502)
        return claims

    def _user(self, fhir_user: str, subject: str) -> str:
        """The local user for an OpenEMR user: created on first sight, role by user type."""
        parts = fhir_user.rstrip("/").split("/")
        if len(parts) < 2 or not parts[-1]:
            raise LaunchError("OpenEMR did not say who the user is (fhirUser).", 502)
        user_type, user_id = parts[-2], parts[-1]
        role = self.settings.roles.get(user_type)
        if role is None:
            raise LaunchError(f"OpenEMR users of type {user_type} may not launch apps here.", 403)
        username = f"openemr:{user_type}/{user_id}"[:128]
        if self.auth.registry.user(username) is None:
            try:
                self.auth.registry.add_user(username, secrets.token_urlsafe(32), role, None)
            except RegistryError as exc:
                if self.auth.registry.user(username) is None:  # not a concurrent first launch
                    raise LaunchError(f"INTEROP_OPENEMR_ROLES: {exc}", 500) from exc
        return username

    def _patient(self, patient_uuid: str) -> str:
        system = self.settings.systems.uuid
        found = canonical.find_one(
            self.ctx, "Patient", [("identifier", f"{system}|{patient_uuid}")]
        )
        if found is not None:
            return str(found["id"])
        if self.syncer is None:
            raise LaunchError("This patient is not known here yet and sync is not configured.", 502)
        try:
            summary, patient_id = self.syncer.sync_patient(patient_uuid)
        except OpenEmrError as exc:
            raise LaunchError(
                f"The patient could not be read from OpenEMR: {exc.detail}", 502
            ) from exc
        if patient_id is None:
            raise LaunchError(
                f"The patient could not be synced: {'; '.join(summary.reasons.values())}", 502
            )
        return patient_id

    def _encounter(self, encounter_uuid: str) -> str | None:
        if not encounter_uuid:
            return None
        system = self.settings.systems.record("encounter")
        found = canonical.find_one(
            self.ctx, "Encounter", [("identifier", f"{system}|{encounter_uuid}")]
        )
        return str(found["id"]) if found else None
