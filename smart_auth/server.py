"""The authorization server's logic, free of HTTP: codes, launches, grants, refresh rotation,
client authentication, introspection and revocation. `smart_auth.routes` puts it on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Column, Connection, Engine, insert, select, update

from fhir_server.store.db import write_transaction
from smart_auth import scopes as sc
from smart_auth.assertion import ASSERTION_TYPE, AssertionVerifier
from smart_auth.config import AuthConfig
from smart_auth.errors import OAuthError, invalid_client, invalid_grant, invalid_request
from smart_auth.hashing import new_token, token_hash
from smart_auth.keys import KeyStore
from smart_auth.models import authorization_codes, launch_contexts, refresh_tokens, sessions
from smart_auth.registry import Client, Registry
from smart_auth.sealing import Sealer
from smart_auth.tokens import TokenService

REFRESH_SCOPES = ("offline_access", "online_access")
# Registered (by an operator: self-registration never gets system/ scopes) on a client that is
# a resource server: it may introspect every token, not only those issued to itself.
INTROSPECT_ANY = "system/token.introspect"
MAX_ACCESS_SECONDS = 3600  # no access token lives longer
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True, slots=True)
class Launch:
    patient: str | None
    encounter: str | None
    username: str | None
    intent: str | None


class AuthServer:
    def __init__(self, engine: Engine, config: AuthConfig) -> None:
        self.engine = engine
        self.config = config
        self.registry = Registry(engine)
        self.keys = KeyStore(engine, Sealer.from_file(config.secret_key_file))
        self.tokens = TokenService(engine, self.keys, config)
        self.assertions = AssertionVerifier(
            engine, self.registry, config.token_url, config.jwks_fetch
        )

    # -- client authentication ----------------------------------------------------------------

    def authenticate(
        self, form: dict[str, str], authorization: str | None, allow_public: bool = True
    ) -> Client:
        """Who is calling the token (or introspection, revocation, launch) endpoint."""
        if form.get("client_assertion_type") or form.get("client_assertion"):
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise invalid_client()
            return self.assertions.authenticate(
                form.get("client_assertion", ""), form.get("client_id")
            )
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise invalid_client() from None
            basic_id, sep, basic_secret = decoded.partition(":")
            if not sep or (client_id and client_id != unquote(basic_id)):
                raise invalid_client()
            client_id, secret = unquote(basic_id), unquote(basic_secret)
        client = self.registry.client(client_id or "")
        if client is None:
            raise invalid_client()
        if client.client_type == "confidential-secret":
            expected = client.secret_hash or ""
            if not secret or not hmac.compare_digest(token_hash(secret), expected):
                raise invalid_client()
            return client
        if client.public and allow_public and not secret:
            return client
        raise invalid_client()

    # -- EHR launch ---------------------------------------------------------------------------

    def create_launch(
        self,
        client_id: str,
        patient: str | None,
        encounter: str | None = None,
        username: str | None = None,
        intent: str | None = None,
    ) -> tuple[str, str | None]:
        """A single-use launch id, and the app's launch URL carrying `iss` and `launch`."""
        client = self.registry.client(client_id)
        if client is None:
            raise invalid_request("unknown client_id for the launch")
        for name, value in (("patient", patient), ("encounter", encounter), ("intent", intent)):
            if value and (len(value) > 64 or "/" in value):
                raise invalid_request(f"{name} must be a resource id (at most 64 characters)")
        if username and self.registry.user(username) is None:
            raise invalid_request(f"unknown user '{username}'")
        launch_id = new_token(24)
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(launch_contexts).values(
                    launch_id=launch_id,
                    client_id=client.client_id,
                    patient=patient or None,
                    encounter=encounter or None,
                    username=username or None,
                    intent=intent or None,
                    expires=int(time.time()) + self.config.launch_seconds,
                    used=False,
                )
            )
        url = None
        if client.launch_url:
            from urllib.parse import urlencode

            joiner = "&" if "?" in client.launch_url else "?"
            url = (
                client.launch_url
                + joiner
                + urlencode({"iss": self.config.fhir_base, "launch": launch_id})
            )
        return launch_id, url

    def consume_launch(self, launch_id: str, client_id: str) -> Launch | None:
        """The launch context, once: a used, expired or foreign launch id gives None."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(launch_contexts).where(launch_contexts.c.launch_id == launch_id[:64])
            ).first()
            if row is None or row.client_id != client_id or row.expires < time.time():
                return None
            taken = claim(conn, launch_contexts.c.launch_id, row.launch_id)
        if not taken:
            return None
        return Launch(row.patient, row.encounter, row.username, row.intent)

    # -- single sign-on sessions --------------------------------------------------------------

    def open_session(self, username: str, client_id: str, seconds: int) -> str:
        """A browser session for one user and one app, opened by a trusted broker (the OpenEMR
        launch bridge) after the user signed in elsewhere: /auth/authorize then asks for no
        second login. Only the hash is stored; the cookie carries the token."""
        token = new_token(32)
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            conn.execute(sessions.delete().where(sessions.c.expires < now))
            conn.execute(
                insert(sessions).values(
                    session_hash=token_hash(token),
                    username=username,
                    client_id=client_id,
                    expires=now + seconds,
                )
            )
        return token

    def close_session(self, token: str) -> None:
        """Sign out: the session's row goes, so the cookie opens nothing any more."""
        if token and len(token) <= 128:
            with write_transaction(self.engine) as conn:
                conn.execute(sessions.delete().where(sessions.c.session_hash == token_hash(token)))

    def session_user(self, token: str, client_id: str) -> str | None:
        """The user of a live session opened for this app, or None."""
        if not token or len(token) > 128:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions).where(sessions.c.session_hash == token_hash(token))
            ).first()
        if row is None or row.expires < time.time() or row.client_id != client_id:
            return None
        return str(row.username)

    # -- authorization codes ------------------------------------------------------------------

    def issue_code(
        self,
        client: Client,
        redirect_uri: str,
        scope: list[str],
        code_challenge: str | None,
        username: str | None,
        context: dict[str, Any],
    ) -> str:
        code = new_token(32)
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(authorization_codes).values(
                    code_hash=token_hash(code),
                    client_id=client.client_id,
                    redirect_uri=redirect_uri,
                    scope=" ".join(scope),
                    code_challenge=code_challenge,
                    username=username,
                    context=json.dumps(context),
                    expires=int(time.time()) + self.config.code_seconds,
                    used=False,
                )
            )
        return code

    # -- the token endpoint -------------------------------------------------------------------

    def token(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise invalid_request("grant_type is required")
        if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
            raise OAuthError(
                "unsupported_grant_type", f"grant_type '{grant_type}' is not supported"
            )
        if grant_type == "refresh_token" and not _names_client(form, authorization):
            client = self._refresh_holder(form.get("refresh_token") or "")
        else:
            client = self.authenticate(form, authorization)
        if grant_type == "authorization_code":
            return self._authorization_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh(client, form)
        return self._client_credentials(client, form)

    def _authorization_code(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        code = form.get("code") or ""
        if not code:
            raise invalid_request("code is required")
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(authorization_codes).where(
                    authorization_codes.c.code_hash == token_hash(code)
                )
            ).first()
            if row is None or row.client_id != client.client_id:
                raise invalid_grant("The authorization code is not valid")
            taken = claim(conn, authorization_codes.c.code_hash, row.code_hash)
        family = code_family(row.code_hash)
        if not taken:
            # RFC 6749 §4.1.2: a code used twice was intercepted; end what it was traded for
            self.revoke_family(family)
            raise invalid_grant("The authorization code was already used; its tokens are revoked")
        if row.expires < time.time():
            raise invalid_grant("The authorization code expired")
        if form.get("redirect_uri") != row.redirect_uri:
            raise invalid_grant("redirect_uri differs from the one in the authorization request")
        if row.code_challenge:
            verifier = form.get("code_verifier") or ""
            if not 43 <= len(verifier) <= 128 or set(verifier) - _VERIFIER_CHARS:
                raise invalid_grant("code_verifier is missing or malformed (RFC 7636 §4.1)")
            if not hmac.compare_digest(s256(verifier), row.code_challenge):
                raise invalid_grant("code_verifier does not match the code_challenge")
        context = json.loads(row.context)
        return self._respond(client, row.scope.split(), row.username, context, family)

    def _refresh_holder(self, presented: str) -> Client:
        """A public client may refresh with the refresh token alone (RFC 6749 §6 asks only
        confidential clients to authenticate; SMART's refresh request has no client_id, and
        fhirclient sends none): the client is the one the token was issued to. A confidential
        client must still authenticate."""
        if not presented:
            raise invalid_request("refresh_token is required")
        with self.engine.connect() as conn:
            holder = conn.execute(
                select(refresh_tokens.c.client_id).where(
                    refresh_tokens.c.token_hash == token_hash(presented)
                )
            ).scalar()
        client = self.registry.client(holder or "")
        if client is None:
            raise invalid_grant("The refresh token is not valid")
        if not client.public:
            raise invalid_client()
        return client

    def _refresh(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        presented = form.get("refresh_token") or ""
        if not presented:
            raise invalid_request("refresh_token is required")
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(presented))
            ).first()
            if row is None or row.client_id != client.client_id or row.revoked:
                raise invalid_grant("The refresh token is not valid")
            taken = claim(conn, refresh_tokens.c.token_hash, row.token_hash)
            if not taken:
                # a rotated-away token came back: someone holds a copy; end the whole family
                conn.execute(
                    update(refresh_tokens)
                    .where(refresh_tokens.c.family == row.family)
                    .values(revoked=True)
                )
        if not taken:
            self.tokens.revoke(row.family, int(time.time()) + MAX_ACCESS_SECONDS)
            raise invalid_grant("The refresh token was already used; the grant is revoked")
        if row.expires < time.time():
            raise invalid_grant("The refresh token expired")
        if row.username and self.registry.user(row.username) is None:
            raise invalid_grant("The user this grant was made for no longer exists")
        granted = row.scope.split()
        scope = granted
        if form.get("scope"):
            scope = sc.split(form["scope"])
            if not set(scope) <= set(granted):
                raise sc_error(
                    "A refresh may only narrow the scope: "
                    + " ".join(s for s in scope if s not in granted)
                )
        return self._respond(client, scope, row.username, json.loads(row.context), row.family)

    def _client_credentials(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        if client.public:
            raise OAuthError(
                "unauthorized_client", "client_credentials needs a confidential client"
            )
        requested = sc.split(form.get("scope"))
        if not requested:
            raise sc_error("scope is required")
        bad = [s for s in requested if not s.startswith("system/")]
        if bad:
            raise sc_error("Backend services get system/ scopes only, not " + " ".join(bad))
        scope = sc.narrow(requested, client.scope)
        if not scope:
            raise sc_error("None of the requested scopes is allowed for this client")
        lifetime = min(self.config.backend_token_seconds, 300)
        token = self.tokens.access_token(
            client_id=client.client_id,
            subject=client.client_id,
            scope=" ".join(scope),
            lifetime=lifetime,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scope),
        }

    def _respond(
        self,
        client: Client,
        scope: list[str],
        username: str | None,
        context: dict[str, Any],
        family: str,
    ) -> dict[str, Any]:
        """Tokens for a grant; `family` names the grant (every access and refresh token of one
        authorization code carries it) so that the whole grant can be revoked at once."""
        lifetime = min(self.config.access_token_seconds, MAX_ACCESS_SECONDS)
        subject = username or client.client_id
        token_context = {k: context.get(k) for k in ("patient", "encounter", "fhirUser", "role")}
        token_context["family"] = family
        body: dict[str, Any] = {
            "access_token": self.tokens.access_token(
                client_id=client.client_id,
                subject=subject,
                scope=" ".join(scope),
                lifetime=lifetime,
                context=token_context,
            ),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scope),
        }
        if context.get("patient"):
            body["patient"] = context["patient"]
        if context.get("encounter"):
            body["encounter"] = context["encounter"]
        if any(s.startswith("launch") for s in scope) or context.get("patient"):
            body["need_patient_banner"] = bool(context.get("need_patient_banner", True))
            body["smart_style_url"] = f"{self.config.auth_base}/smart-style.json"
        if "openid" in scope and username and ("fhirUser" in scope or "profile" in scope):
            body["id_token"] = self.tokens.id_token(
                client_id=client.client_id,
                subject=username,
                fhir_user=context.get("fhirUser"),
                nonce=context.get("nonce"),
            )
        if any(s in scope for s in REFRESH_SCOPES):
            body["refresh_token"] = self._new_refresh(client, scope, username, context, family)
        return body

    def _refresh_expiry(self, scope: list[str], context: dict[str, Any]) -> int:
        """offline_access: the configured lifetime from now. online_access alone: no later
        than the end of the user's sign-in session (recorded when the grant began), so the
        app keeps access only while the user is, in effect, still signed in."""
        expires = int(time.time()) + self.config.refresh_token_seconds
        if "offline_access" not in scope and context.get("session_ends"):
            expires = min(expires, int(context["session_ends"]))
        return expires

    def _new_refresh(
        self,
        client: Client,
        scope: list[str],
        username: str | None,
        context: dict[str, Any],
        family: str,
    ) -> str:
        token = new_token(32)
        if not context.get("session_ends") and "offline_access" not in scope and username:
            context = {
                **context,
                "session_ends": int(time.time()) + self.config.online_session_seconds,
            }
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(refresh_tokens).values(
                    token_hash=token_hash(token),
                    family=family,
                    client_id=client.client_id,
                    scope=" ".join(scope),
                    username=username,
                    context=json.dumps(context),
                    expires=self._refresh_expiry(scope, context),
                    used=False,
                    revoked=False,
                )
            )
        return token

    # -- introspection and revocation ---------------------------------------------------------

    def introspect(self, token: str, caller: Client) -> dict[str, Any]:
        """RFC 7662 for an authenticated client: about its own tokens only, unless it is a
        resource server (INTROSPECT_ANY); anything else is just inactive (§2.2)."""
        out = self._introspect(token)
        foreign = out.get("client_id") != caller.client_id
        if out.get("active") and foreign and INTROSPECT_ANY not in caller.scope:
            return {"active": False}
        return out

    def _introspect(self, token: str) -> dict[str, Any]:
        claims = self.tokens.decode(token)
        if claims is not None:
            out = {"active": True, "token_type": "Bearer"}
            for name in (
                "scope",
                "client_id",
                "exp",
                "iat",
                "sub",
                "iss",
                "aud",
                "patient",
                "encounter",
                "fhirUser",
            ):
                if claims.get(name) is not None:
                    out[name] = claims[name]
            return out
        with self.engine.connect() as conn:
            row = conn.execute(
                select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(token))
            ).first()
        if row is None or row.used or row.revoked or row.expires < time.time():
            return {"active": False}
        if self.tokens.client_removed(row.client_id):
            return {"active": False}
        context = json.loads(row.context)
        out = {
            "active": True,
            "token_type": "refresh_token",
            "scope": row.scope,
            "client_id": row.client_id,
            "exp": row.expires,
            "iss": self.config.issuer,
            "sub": row.username or row.client_id,
        }
        for name in ("patient", "encounter", "fhirUser"):
            if context.get(name):
                out[name] = context[name]
        return out

    def revoke(self, client: Client, token: str) -> None:
        """RFC 7009: revoke what the client owns; anything else is silently ignored."""
        claims = self.tokens.decode(token)
        if claims is not None:
            if claims.get("client_id") == client.client_id:
                self.tokens.revoke(str(claims.get("jti")), int(claims["exp"]))
            return
        with self.engine.connect() as conn:
            row = conn.execute(
                select(refresh_tokens.c.family, refresh_tokens.c.client_id).where(
                    refresh_tokens.c.token_hash == token_hash(token)
                )
            ).first()
        if row and row.client_id == client.client_id:
            # RFC 7009 §2.1: revoking a refresh token ends the access tokens of its grant too
            self.revoke_family(row.family)

    def revoke_family(self, family: str) -> None:
        """End a grant: its refresh tokens, and every access token that carries its family."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(refresh_tokens).where(refresh_tokens.c.family == family).values(revoked=True)
            )
        self.tokens.revoke(family, int(time.time()) + MAX_ACCESS_SECONDS)

    def remove_client(self, client_id: str) -> bool:
        """Remove a client and end every token it holds: at once in this process, within
        `tokens.REVOCATION_REFRESH` seconds in every other (see `Registry.remove_client`)."""
        removed = self.registry.remove_client(client_id)
        if removed:
            self.tokens.client_gone(client_id)
        return removed


def _names_client(form: dict[str, str], authorization: str | None) -> bool:
    """Whether the request says which client it is (any means of client authentication)."""
    return bool(
        form.get("client_id")
        or form.get("client_secret")
        or form.get("client_assertion")
        or form.get("client_assertion_type")
        or authorization
    )


def code_family(code_hash: str) -> str:
    """The grant family of an authorization code: derived, so a replay finds it again."""
    return hashlib.sha256(b"family:" + code_hash.encode()).hexdigest()[:32]


def claim(conn: Connection, key: Column[Any], value: str) -> bool:
    """Mark a single-use row (code, launch id, refresh token) used; False if it already was.

    One conditional UPDATE, so two concurrent redemptions cannot both win."""
    table = key.table
    result = conn.execute(
        update(table).where(key == value, table.c.used.is_(False)).values(used=True)
    )
    return result.rowcount == 1


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sc_error(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)
