"""`interop cds clients add|list|remove`: the EHRs (CDS clients) trusted to call /cds-services.

A client is known by the `iss` of the JWTs it signs; its public keys are registered as a JWKS
file or a JWKS URL (fetched through the outbound client: allow its host with
INTEROP_OUTBOUND_ALLOW_JWKS).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cds_hooks.clients import DEFAULT_SCOPE, CdsClients
from smart_auth.registry import RegistryError


def add_parsers(commands: Any, parser: Callable[..., Any]) -> None:
    cds = parser(commands, "cds", "the CDS Hooks service (/cds-services): its clients",
                 "interop cds clients list")  # fmt: skip
    cds_commands = cds.add_subparsers(dest="cds_command", required=True, metavar="SUBCOMMAND")
    clients = parser(cds_commands, "clients", "CDS clients (EHRs) allowed to call",
                     "interop cds clients list --json")  # fmt: skip
    sub = clients.add_subparsers(dest="cds_clients_command", required=True, metavar="SUBCOMMAND")
    add = parser(sub, "add", "register (or replace) a CDS client by its JWT issuer",
                 "interop cds clients add --iss https://ehr.example.org "
                 "--jwks-url https://ehr.example.org/jwks.json")  # fmt: skip
    add.add_argument("--iss", required=True, help="the `iss` claim of the client's JWTs")
    add.add_argument("--name", default="", help="a name for people (default: the iss)")
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-url", help="where the client publishes its public keys")
    keys.add_argument("--jwks-file", help="a file holding the client's public JWKS")
    add.add_argument(
        "--scope",
        default=DEFAULT_SCOPE,
        help="read scopes used when a call carries no access token of ours "
        f"(default: {DEFAULT_SCOPE})",
    )
    _json_flag(add)
    lst = parser(sub, "list", "list CDS clients", "interop cds clients list")
    _json_flag(lst)
    rm = parser(sub, "remove", "remove a CDS client", "interop cds clients remove ISS")
    rm.add_argument("iss", help="the client's JWT issuer, as registered")
    _json_flag(rm)


def _json_flag(p: Any) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace, clients: CdsClients) -> int:
    try:
        return _run(args, clients)
    except (RegistryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, clients: CdsClients) -> int:
    command = args.cds_clients_command
    if command == "add":
        jwks = json.loads(Path(args.jwks_file).read_text()) if args.jwks_file else None
        client = clients.add(args.iss, args.name, args.jwks_url, jwks, args.scope)
        out = client.as_json()
        print(json.dumps(out) if args.json else f"registered CDS client {client.iss}")
        return 0
    if command == "list":
        found = [c.as_json() for c in clients.all()]
        if args.json:
            print(json.dumps({"clients": found}))
        else:
            for c in found:
                print(
                    f"{c['iss']}\t{c['name']}\t{c['jwks_url'] or 'jwks registered'}\t{c['scope']}"
                )
        return 0
    removed = clients.remove(args.iss)
    print(
        json.dumps({"removed": removed})
        if args.json
        else ("removed" if removed else f"no CDS client {args.iss}")
    )
    return 0 if removed else 1
