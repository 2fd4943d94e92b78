"""The `interop` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from interop.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interop", description="HL7/FHIR interoperability server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the FHIR API (migrates the database first)")
    serve.add_argument("--host", help="listen address (INTEROP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (INTEROP_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (INTEROP_WORKERS, default 1)")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations")

    config = commands.add_parser("config", help="print the effective configuration, secrets masked")
    config.add_argument("--json", action="store_true", help="one JSON object on stdout")

    from interop import auth_cli

    auth_cli.add_parsers(commands)

    args = parser.parse_args(argv)
    if args.command in ("keys", "users", "clients", "token", "launch"):
        return auth_cli.run(args, _auth_server())
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db_upgrade()
    if args.command == "config":
        return _config(args.json)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from fhir_server.store.db import create_db_engine, upgrade
    from interop.logs import configure

    for flag, env in (
        ("host", "INTEROP_HOST"),
        ("port", "INTEROP_PORT"),
        ("workers", "INTEROP_WORKERS"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    log = logging.getLogger("interop")
    engine = create_db_engine(settings.effective_database_url, 1)
    upgrade(engine)
    _ensure_signing_key(engine, settings)
    engine.dispose()
    log.info(
        "starting",
        extra={
            "fhir_base": settings.effective_base_url,
            "auth": settings.auth,
            "workers": settings.workers,
        },
    )
    uvicorn.run(
        "interop.app:create_app_without_migrations",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return 0


def _ensure_signing_key(engine, settings) -> None:  # type: ignore[no-untyped-def]
    """Create the first signing key before workers fork, so they all share it."""
    from interop.app import auth_config
    from smart_auth.server import AuthServer

    AuthServer(engine, auth_config(settings)).keys.load()


def _auth_server():  # type: ignore[no-untyped-def]
    from fhir_server.store.db import create_db_engine, upgrade
    from interop.app import auth_config
    from smart_auth.server import AuthServer

    settings = get_settings()
    engine = create_db_engine(settings.effective_database_url, 1)
    upgrade(engine)
    return AuthServer(engine, auth_config(settings))


def _db_upgrade() -> int:
    from fhir_server.store.db import create_db_engine, upgrade

    settings = get_settings()
    engine = create_db_engine(settings.effective_database_url, 1)
    upgrade(engine)
    print(f"database at newest schema: {settings.masked()['INTEROP_DATABASE_URL']}")
    return 0


def _config(as_json: bool) -> int:
    values = get_settings().masked()
    if as_json:
        print(json.dumps(values))
    else:
        width = max(len(k) for k in values)
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
