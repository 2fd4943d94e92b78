"""`interop keys|users|clients|token|launch`: the operator's side of the authorization server.

Secrets (user passwords) are read from stdin only; a client secret is printed once, at creation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smart_auth import scopes as sc
from smart_auth.registry import ROLES, RegistryError
from smart_auth.server import AuthServer


def add_parsers(commands: Any, parser: Callable[..., Any]) -> None:
    """`parser(commands, name, help, example)` makes a subcommand (interop.cli._parser)."""

    def json_flag(p: Any) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    keys = parser(commands, "keys", "signing keys of the authorization server", "interop keys list")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    rotate = parser(keys_commands, "rotate", "new signing key; old ones still verify",
                    "interop keys rotate")  # fmt: skip
    json_flag(rotate)
    list_keys = parser(keys_commands, "list", "list signing keys (ids and dates, never the keys)",
                       "interop keys list --json")  # fmt: skip
    json_flag(list_keys)

    users = parser(commands, "users", "local users who sign in to the console and SMART apps",
                   "interop users list")  # fmt: skip
    users_commands = users.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")
    add_user = parser(users_commands, "add", "add a user (password from stdin)",
                      "printf '%s\\n' \"$PASSWORD\" | interop users add alice --role physician "
                      "--password-stdin")  # fmt: skip
    add_user.add_argument("name", help="the user name to sign in with")
    add_user.add_argument("--role", required=True, help=f"one of: {', '.join(ROLES)}")
    add_user.add_argument("--fhir-user", help="the user's FHIR resource, e.g. Practitioner/123")
    add_user.add_argument("--password-stdin", action="store_true", required=True,
                          help="read the password from stdin (required: never on the command "
                          "line)")  # fmt: skip
    json_flag(add_user)
    list_users = parser(users_commands, "list", "list users (name, role, FHIR user)",
                        "interop users list --json")  # fmt: skip
    json_flag(list_users)
    remove_user = parser(users_commands, "remove", "remove a user; their sessions end",
                         "interop users remove alice")  # fmt: skip
    remove_user.add_argument("name", help="the user name")
    json_flag(remove_user)
    passwd = parser(
        users_commands,
        "passwd",
        "set a user's password (from stdin)",
        "printf '%s\\n' \"$PASSWORD\" | interop users passwd alice --password-stdin",
    )
    passwd.add_argument("name", help="the user name")
    passwd.add_argument("--password-stdin", action="store_true", required=True,
                        help="read the new password from stdin")  # fmt: skip
    json_flag(passwd)

    clients = parser(commands, "clients", "registered SMART / backend clients",
                     "interop clients list")  # fmt: skip
    clients_commands = clients.add_subparsers(dest="clients_command", required=True,
                                              metavar="SUBCOMMAND")  # fmt: skip
    add_client = parser(clients_commands, "add", "register a client (a secret is shown once)",
                        "interop clients add --name reports --type confidential-secret "
                        "--scope 'system/*.rs'")  # fmt: skip
    add_client.add_argument("--name", required=True, help="the name users see")
    add_client.add_argument(
        "--type",
        required=True,
        choices=["public", "confidential-secret", "confidential-jwks"],
        help="public (browser app, PKCE), confidential-secret or confidential-jwks (backend)",
    )
    add_client.add_argument("--redirect-uri", nargs="*", default=[], dest="redirect_uris",
                            help="exact redirect URIs of an app")  # fmt: skip
    add_client.add_argument("--scope", required=True, help="the most the client may ask for")
    add_client.add_argument("--jwks-url", help="where the client's public keys are")
    add_client.add_argument("--jwks", help="file holding the client's public JWKS")
    add_client.add_argument("--launch-url", help="the app's launch URL (EHR launch)")
    add_client.add_argument("--can-launch", action="store_true", help="may POST /auth/launch")
    add_client.add_argument("--pkce-exempt", action="store_true", help="old confidential apps")
    json_flag(add_client)
    list_clients = parser(clients_commands, "list", "list clients", "interop clients list --json")
    json_flag(list_clients)
    show_client = parser(clients_commands, "show", "one client's registration (no secret)",
                         "interop clients show CLIENT_ID")  # fmt: skip
    show_client.add_argument("client_id", help="the client id")
    json_flag(show_client)
    remove = parser(clients_commands, "remove", "remove a client; its tokens stop working",
                    "interop clients remove CLIENT_ID")  # fmt: skip
    remove.add_argument("client_id", help="the client id")
    json_flag(remove)

    token = parser(commands, "token", "print an access token for a client's scripts",
                   "TOKEN=$(interop token --client CLIENT_ID --scope 'system/*.rs')")  # fmt: skip
    token.add_argument("--client", required=True, help="a registered client id")
    token.add_argument("--scope", required=True, help="scopes wanted (narrowed to the client's)")
    json_flag(token)

    launch = parser(commands, "launch", "create an EHR launch; prints the launch URL",
                    "interop launch --client CLIENT_ID --patient 123")  # fmt: skip
    launch.add_argument("--client", required=True, help="the app's client id")
    launch.add_argument("--patient", required=True, help="the Patient id in context")
    launch.add_argument("--encounter", help="the Encounter id in context")
    launch.add_argument("--user", help="the user launching")
    json_flag(launch)


READ_ONLY = {("keys", "list"), ("users", "list"), ("clients", "list"), ("clients", "show")}


def writes(args: argparse.Namespace) -> bool:
    """False for the commands that only read (they never create a schema)."""
    sub = getattr(args, f"{args.command}_command", None)
    return (args.command, sub) not in READ_ONLY


def run(args: argparse.Namespace, server: AuthServer) -> int:
    try:
        return _run(args, server)
    except (RegistryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload) if as_json else text)


def _run(args: argparse.Namespace, server: AuthServer) -> int:
    if args.command == "keys":
        if args.keys_command == "list":
            keys = server.keys.describe()
            if args.json:
                print(json.dumps({"keys": keys}))
            for k in [] if args.json else keys:
                state = "signing" if k["signing"] else "verifies only"
                print(f"{k['kid']}  {k['alg']}  created {_when(k['created'])}  {state}")
            return 0
        kid = server.keys.rotate()
        _emit(args.json, {"kid": kid}, f"new signing key {kid}; older keys kept for verification")
        return 0
    if args.command == "users":
        return _users(args, server)
    if args.command == "clients":
        return _clients(args, server)
    if args.command == "token":
        return _token(args, server)
    if args.command == "launch":
        launch_id, url = server.create_launch(
            args.client, args.patient, args.encounter, args.user, "patient-chart"
        )
        _emit(
            args.json,
            {"launch": launch_id, "launch_url": url, "iss": server.config.fhir_base},
            url or f"launch={launch_id} iss={server.config.fhir_base} (client has no launch URL)",
        )
        return 0
    return 2


def _clients(args: argparse.Namespace, server: AuthServer) -> int:
    if args.clients_command == "add":
        jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else None
        client, secret = server.registry.add_client(
            name=args.name,
            client_type=args.type,
            redirect_uris=args.redirect_uris,
            scope=args.scope,
            jwks_url=args.jwks_url,
            jwks=jwks,
            launch_url=args.launch_url,
            pkce_exempt=args.pkce_exempt,
            can_launch=args.can_launch,
        )
        payload = client.as_json() | ({"client_secret": secret} if secret else {})
        text = f"client_id {client.client_id}"
        if secret:
            text += f"\nclient_secret {secret}  (shown once; store it now)"
        _emit(args.json, payload, text)
        return 0
    if args.clients_command == "list":
        found = server.registry.clients()
        if args.json:
            print(json.dumps({"clients": [c.as_json() for c in found]}))
        else:
            for c in found:
                print(f"{c.client_id}  {c.client_type:<20} {c.name}  [{' '.join(c.scope)}]")
        return 0
    if args.clients_command == "show":
        shown = server.registry.client(args.client_id)
        if shown is None:
            raise ValueError(f"no client {args.client_id} (see `interop clients list`)")
        payload = shown.as_json()
        text = "\n".join(f"{k}: {v}" for k, v in payload.items())
        _emit(args.json, payload, text)
        return 0
    removed = server.remove_client(args.client_id)
    _emit(args.json, {"removed": removed}, "removed" if removed else "no such client")
    return 0 if removed else 1


def _users(args: argparse.Namespace, server: AuthServer) -> int:
    registry = server.registry
    if args.users_command == "list":
        found = registry.users()
        if args.json:
            print(json.dumps({"users": [
                {"username": u.username, "role": u.role, "fhirUser": u.fhir_user} for u in found
            ]}))  # fmt: skip
        for u in [] if args.json else found:
            print(f"{u.username:<24} {u.role:<12} {u.fhir_user or ''}")
        return 0
    if args.users_command == "remove":
        removed = registry.remove_user(args.name)
        _emit(args.json, {"removed": removed}, "removed" if removed else f"no user {args.name}")
        return 0 if removed else 1
    password = sys.stdin.readline().rstrip("\r\n")
    if args.users_command == "passwd":
        changed = registry.set_password(args.name, password)
        _emit(args.json, {"changed": changed},
              "password changed" if changed else f"no user {args.name}")  # fmt: skip
        return 0 if changed else 1
    user = registry.add_user(args.name, password, args.role, args.fhir_user)
    _emit(
        args.json,
        {"username": user.username, "role": user.role, "fhirUser": user.fhir_user},
        f"user {user.username} added (role {user.role})",
    )
    return 0


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _token(args: argparse.Namespace, server: AuthServer) -> int:
    client = server.registry.client(args.client)
    if client is None:
        raise ValueError(f"no client {args.client}")
    scope = sc.narrow(sc.split(args.scope), client.scope)
    if not scope:
        raise ValueError(f"the client may not have any of: {args.scope}")
    lifetime = server.config.backend_token_seconds
    token = server.tokens.access_token(
        client_id=client.client_id,
        subject=client.client_id,
        scope=" ".join(scope),
        lifetime=lifetime,
    )
    _emit(
        args.json,
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scope),
        },
        token,
    )
    return 0
