"""The client and user registry (operators: `interop clients|users`; apps: RFC 7591)."""

from __future__ import annotations

import json
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update

from fhir_server.store.db import write_transaction
from smart_auth.hashing import hash_password, needs_rehash, token_hash, verify_password
from smart_auth.models import (
    authorization_codes,
    clients,
    launch_contexts,
    refresh_tokens,
    removed_clients,
    sessions,
    users,
)

CLIENT_TYPES = ("public", "confidential-secret", "confidential-jwks")
ROLES = ("admin", "operator", "physician", "radiologist", "lab", "nurse", "patient", "external")


class RegistryError(ValueError):
    """Input an operator or a registering app must fix."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    client_type: str
    redirect_uris: list[str]
    scope: list[str]
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    launch_url: str | None = None
    pkce_exempt: bool = False
    can_launch: bool = False
    verified: bool = True  # False: registered itself (RFC 7591), not by an operator
    secret_hash: str | None = field(default=None, repr=False)

    @property
    def public(self) -> bool:
        return self.client_type == "public"

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_name": self.name,
            "type": self.client_type,
            "redirect_uris": self.redirect_uris,
            "scope": " ".join(self.scope),
            "jwks_uri": self.jwks_url,
            "launch_url": self.launch_url,
            "pkce_exempt": self.pkce_exempt,
            "can_launch": self.can_launch,
            "verified": self.verified,
        }


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    fhir_user: str | None


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- clients ------------------------------------------------------------------------------

    def add_client(
        self,
        *,
        name: str,
        client_type: str,
        redirect_uris: list[str],
        scope: str,
        jwks_url: str | None = None,
        jwks: dict[str, Any] | None = None,
        launch_url: str | None = None,
        pkce_exempt: bool = False,
        can_launch: bool = False,
        verified: bool = True,
    ) -> tuple[Client, str | None]:
        """Register a client; returns it and, for a secret client, the secret (shown once).
        Operators register verified clients; apps registering themselves are unverified."""
        texts = [name, scope, jwks_url or "", launch_url or "", *redirect_uris]
        if any(isinstance(t, str) and "\x00" in t for t in texts) or "\\u0000" in json.dumps(jwks):
            raise RegistryError("client metadata may not contain NUL characters")
        if client_type not in CLIENT_TYPES:
            raise RegistryError(f"client type must be one of {', '.join(CLIENT_TYPES)}")
        if not name.strip() or len(name) > 256:
            raise RegistryError("a client needs a name of at most 256 characters")
        if jwks_url and not jwks_url.startswith(("https://", "http://")):
            raise RegistryError("the JWKS URL must be an http(s) URL")
        check_redirect_uris(redirect_uris)
        if client_type == "public" and pkce_exempt:
            raise RegistryError("public clients always use PKCE")
        if client_type == "confidential-jwks":
            if bool(jwks_url) == bool(jwks):
                raise RegistryError("a confidential-jwks client needs a JWKS URL or a JWKS")
            if jwks is not None:
                check_jwks(jwks)
        elif jwks_url or jwks:
            raise RegistryError("only confidential-jwks clients have a JWKS")
        if not verified and self._impersonates(name):
            raise RegistryError(
                f"the name '{name.strip()}' belongs to an app your administrator registered"
            )
        client_id = _new_client_id()
        secret = secrets.token_urlsafe(32) if client_type == "confidential-secret" else None
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(clients).values(
                    client_id=client_id,
                    name=name.strip(),
                    client_type=client_type,
                    secret_hash=token_hash(secret) if secret else None,
                    redirect_uris=json.dumps(redirect_uris),
                    scope=" ".join(dict.fromkeys(scope.split())),
                    jwks_url=jwks_url or None,
                    jwks=json.dumps(jwks) if jwks is not None else None,
                    launch_url=launch_url or None,
                    pkce_exempt=pkce_exempt,
                    can_launch=can_launch,
                    verified=verified,
                    created=int(time.time()),
                )
            )
        client = self.client(client_id)
        assert client is not None
        return client, secret

    def _impersonates(self, name: str) -> bool:
        """A self-registered app may not take the name of an operator-registered one."""
        wanted = _plain(name)
        with self.engine.connect() as conn:
            names = conn.execute(select(clients.c.name).where(clients.c.verified)).scalars()
            return any(_plain(taken) == wanted for taken in names)

    def client(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 128 or "\x00" in client_id:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
        return _client(row._mapping) if row else None

    def clients(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(clients).order_by(clients.c.created, clients.c.name)).all()
        return [_client(r._mapping) for r in rows]

    def remove_client(self, client_id: str) -> bool:
        """Remove a client and, in the same transaction, everything it holds: its refresh
        tokens, codes, launches and sessions go, and a removal marker makes every token
        verifier refuse its access tokens (`TokenService`, within its refresh interval)."""
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            if not conn.execute(delete(clients).where(clients.c.client_id == client_id)).rowcount:
                return False
            for table in (refresh_tokens, authorization_codes, launch_contexts, sessions):
                conn.execute(delete(table).where(table.c.client_id == client_id))
            # no access token outlives a day; older markers only name tokens long expired
            conn.execute(delete(removed_clients).where(removed_clients.c.removed < now - 86400))
            conn.execute(delete(removed_clients).where(removed_clients.c.client_id == client_id))
            conn.execute(insert(removed_clients).values(client_id=client_id, removed=now))
        return True

    def update_client(self, client_id: str, redirect_uris: list[str], scope: str) -> Client:
        """An operator changes what a client may ask for and where its answers go. Narrowing
        the scope does not end tokens already issued (remove the client for that)."""
        check_redirect_uris(redirect_uris)
        if "\x00" in scope:
            raise RegistryError("client metadata may not contain NUL characters")
        client = self.client(client_id)
        if client is None:
            raise RegistryError(f"no client '{client_id}'")
        if client.public and not redirect_uris:
            raise RegistryError("a public client needs at least one redirect URI")
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(clients)
                .where(clients.c.client_id == client_id)
                .values(
                    redirect_uris=json.dumps(redirect_uris),
                    scope=" ".join(dict.fromkeys(scope.split())),
                )
            )
        updated = self.client(client_id)
        assert updated is not None
        return updated

    # -- users --------------------------------------------------------------------------------

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(users.c.username, users.c.role, users.c.fhir_user).order_by(users.c.username)
            ).all()
        return [User(*r) for r in rows]

    def set_role(self, username: str, role: str) -> User:
        if role not in ROLES:
            raise RegistryError(f"role must be one of {', '.join(ROLES)}")
        user = self.user(username)
        if user is None:
            raise RegistryError(f"no user '{username}'")
        if role == "patient" and not (user.fhir_user or "").startswith("Patient/"):
            raise RegistryError("a user with role patient needs a fhirUser Patient/ID")
        with write_transaction(self.engine) as conn:
            conn.execute(update(users).where(users.c.username == username).values(role=role))
        return User(username, role, user.fhir_user)

    def remove_user(self, username: str) -> bool:
        """Remove a user and their browser sessions; refresh tokens made for them stop
        working at their next use (the token endpoint checks that the user exists)."""
        with write_transaction(self.engine) as conn:
            if not conn.execute(delete(users).where(users.c.username == username)).rowcount:
                return False
            conn.execute(delete(sessions).where(sessions.c.username == username))
        return True

    def add_user(self, username: str, password: str, role: str, fhir_user: str | None) -> User:
        if role not in ROLES:
            raise RegistryError(f"role must be one of {', '.join(ROLES)}")
        if not username.strip() or len(username) > 128:
            raise RegistryError("a user name must be 1 to 128 characters")
        if len(password) < 8:
            raise RegistryError("a password needs at least 8 characters")
        if fhir_user and (fhir_user.count("/") != 1 or not all(fhir_user.split("/"))):
            raise RegistryError("--fhir-user must look like Practitioner/123")
        if role == "patient" and not (fhir_user or "").startswith("Patient/"):
            raise RegistryError("a user with role patient needs --fhir-user Patient/ID")
        password_hash = hash_password(password)  # slow (argon2id): not inside the transaction
        with write_transaction(self.engine) as conn:
            if conn.execute(select(users.c.username).where(users.c.username == username)).first():
                raise RegistryError(f"user '{username}' already exists")
            conn.execute(
                insert(users).values(
                    username=username,
                    password_hash=password_hash,
                    role=role,
                    fhir_user=fhir_user or None,
                    created=int(time.time()),
                )
            )
        return User(username, role, fhir_user or None)

    def user(self, username: str) -> User | None:
        if "\x00" in username:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.username, users.c.role, users.c.fhir_user).where(
                    users.c.username == username
                )
            ).first()
        return User(*row) if row else None

    def login(self, username: str, password: str) -> User | None:
        """The user, if the password is right. A hash of an older kind is replaced by an
        argon2id hash now that the password is known (callers throttle guessing)."""
        username = username.replace("\x00", "")
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username[:128])).first()
        # hash even for an unknown user, so timing does not tell which names exist
        ok = verify_password(password, row.password_hash if row else _DUMMY_HASH)
        if not row or not ok:
            return None
        if needs_rehash(row.password_hash):
            upgraded = hash_password(password)
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(users)
                    .where(users.c.username == row.username)
                    .where(users.c.password_hash == row.password_hash)
                    .values(password_hash=upgraded)
                )
        return User(row.username, row.role, row.fhir_user)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_redirect_uris(redirect_uris: list[str]) -> None:
    for uri in redirect_uris:
        if not isinstance(uri, str) or len(uri) > 2000:
            raise RegistryError("redirect URIs are strings of at most 2000 characters")
        if not uri.startswith(("https://", "http://")) or "#" in uri:
            raise RegistryError(f"redirect URI '{uri}' must be an absolute http(s) URL")
        if not _plain_host(uri):
            raise RegistryError(f"redirect URI '{uri}' needs a host and no user name")


def _plain_host(uri: str) -> str:
    """The host a redirect URI really goes to, '' when it hides it behind a user name."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return ""
    if "@" in parts.netloc or not parts.hostname:
        return ""
    return parts.hostname + (f":{port}" if port else "")


def redirect_host(uri: str) -> str:
    """What the consent page shows: where the app will send the browser."""
    return _plain_host(uri) or uri


def _plain(name: str) -> str:
    """A name as a reader sees it: letters and digits, case and spacing ignored."""
    return "".join(c for c in unicodedata.normalize("NFKC", name).casefold() if c.isalnum())


def _new_client_id() -> str:
    """A random id that never starts with '-', which `interop launch --client ID` (argparse)
    would take for an option (one id in 64 otherwise)."""
    while (client_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return client_id


def check_jwks(jwks: Any) -> None:
    """A JWKS a client may register: public keys, each `kid` present once."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise RegistryError("a JWKS is an object with a non-empty 'keys' list")
    kids = [k.get("kid") for k in keys if isinstance(k, dict)]
    if len(kids) != len(keys):
        raise RegistryError("every JWKS entry must be an object")
    if len(set(kids)) != len(kids):
        raise RegistryError("the JWKS holds two keys with one kid")
    for key in keys:
        if "d" in key:
            raise RegistryError("the JWKS holds a private key; register public keys only")


def _client(row: Any) -> Client:
    return Client(
        client_id=row["client_id"],
        name=row["name"],
        client_type=row["client_type"],
        redirect_uris=json.loads(row["redirect_uris"]),
        scope=row["scope"].split(),
        jwks_url=row["jwks_url"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
        launch_url=row["launch_url"],
        pkce_exempt=bool(row["pkce_exempt"]),
        can_launch=bool(row["can_launch"]),
        verified=bool(row["verified"]),
        secret_hash=row["secret_hash"],
    )
