"""`interop keys|users|clients|token|launch`: the operator's side of the authorization server.

Secrets (user passwords) are read from stdin only; a client secret is printed once, at creation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smart_auth import scopes as sc
from smart_auth.registry import RegistryError
from smart_auth.server import AuthServer


def add_parsers(commands: Any) -> None:
    keys = commands.add_parser("keys", help="signing keys of the authorization server")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_commands.add_parser("rotate", help="new signing key; old ones still verify")
    rotate.add_argument("--json", action="store_true")

    users = commands.add_parser("users", help="local users who sign in to SMART apps")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add_user = users_commands.add_parser("add", help="add a user (password from stdin)")
    add_user.add_argument("name")
    add_user.add_argument("--role", required=True)
    add_user.add_argument("--fhir-user", help="e.g. Practitioner/123")
    add_user.add_argument("--password-stdin", action="store_true", required=True)
    add_user.add_argument("--json", action="store_true")

    clients = commands.add_parser("clients", help="registered SMART / backend clients")
    clients_commands = clients.add_subparsers(dest="clients_command", required=True)
    add_client = clients_commands.add_parser("add", help="register a client")
    add_client.add_argument("--name", required=True)
    add_client.add_argument(
        "--type", required=True, choices=["public", "confidential-secret", "confidential-jwks"]
    )
    add_client.add_argument("--redirect-uri", nargs="*", default=[], dest="redirect_uris")
    add_client.add_argument("--scope", required=True, help="the most the client may ask for")
    add_client.add_argument("--jwks-url")
    add_client.add_argument("--jwks", help="file holding the client's public JWKS")
    add_client.add_argument("--launch-url", help="the app's launch URL (EHR launch)")
    add_client.add_argument("--can-launch", action="store_true", help="may POST /auth/launch")
    add_client.add_argument("--pkce-exempt", action="store_true", help="old confidential apps")
    add_client.add_argument("--json", action="store_true")
    list_clients = clients_commands.add_parser("list", help="list clients")
    list_clients.add_argument("--json", action="store_true")
    remove = clients_commands.add_parser("remove", help="remove a client")
    remove.add_argument("client_id")
    remove.add_argument("--json", action="store_true")

    token = commands.add_parser("token", help="print an access token for a client's scripts")
    token.add_argument("--client", required=True)
    token.add_argument("--scope", required=True)
    token.add_argument("--json", action="store_true")

    launch = commands.add_parser("launch", help="create an EHR launch; prints the launch URL")
    launch.add_argument("--client", required=True)
    launch.add_argument("--patient", required=True)
    launch.add_argument("--encounter")
    launch.add_argument("--user")
    launch.add_argument("--json", action="store_true")


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
        kid = server.keys.rotate()
        _emit(args.json, {"kid": kid}, f"new signing key {kid}; older keys kept for verification")
        return 0
    if args.command == "users":
        password = sys.stdin.readline().rstrip("\r\n")
        user = server.registry.add_user(args.name, password, args.role, args.fhir_user)
        _emit(
            args.json,
            {"username": user.username, "role": user.role, "fhirUser": user.fhir_user},
            f"user {user.username} added (role {user.role})",
        )
        return 0
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
    removed = server.remove_client(args.client_id)
    _emit(args.json, {"removed": removed}, "removed" if removed else "no such client")
    return 0 if removed else 1


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
