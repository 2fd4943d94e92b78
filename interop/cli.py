"""The `interop` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from interop import imaging_cli, openemr_cli
from interop.settings import get_settings

EXAMPLES = """examples:
  interop serve                                  run the server (./scripts/serve does this)
  interop demo                                   load a small demo data set into a running server
  interop hl7 send examples/hl7/oru-r01.hl7      send an HL7 v2 message over MLLP
  interop clients add --name cli --type confidential-secret --scope 'system/*.rs'
  interop db check                               is the database schema current?
"""


class CliError(Exception):
    """A failure the operator can fix: printed as one line (`error: ...`), exit status 1."""


def _parser(commands: Any, name: str, help: str, example: str, **kw: Any) -> Any:
    """A subcommand with its help and an example in its epilog (`interop CMD --help`)."""
    return commands.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )


def _json_flag(p: Any) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    from hl7_listener.inbox import parse_time

    parser = argparse.ArgumentParser(
        prog="interop",
        description="HL7/FHIR interoperability server: FHIR R4 API, SMART auth, HL7 v2 MLLP, "
        "DICOMweb and AI write-back",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"interop {_version()}",
                        help="print the version and exit")  # fmt: skip
    parser.add_argument("--traceback", action="store_true",
                        help="on an unexpected error, show the Python traceback")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _parser(commands, "serve", "run the FHIR API (migrates the database first)",
                    "interop serve --port 8080")  # fmt: skip
    serve.add_argument("--host", help="listen address (INTEROP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (INTEROP_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (INTEROP_WORKERS, default 1)")
    serve.add_argument(
        "--no-background",
        action="store_true",
        help="a pure API replica: no outbox consumers, jobs, deliveries, syncs or sweeps "
        "(INTEROP_BACKGROUND=false); other replicas and `interop worker` run them",
    )

    db = _parser(commands, "db", "database schema: upgrade, current, check", "interop db check")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    _parser(db_commands, "upgrade", "apply pending migrations", "interop db upgrade")
    current = _parser(db_commands, "current", "print the schema revision of the database",
                      "interop db current")  # fmt: skip
    _json_flag(current)
    check = _parser(db_commands, "check",
                    "exit 0 when the schema is current, 1 when migrations are pending",
                    "interop db check || interop db upgrade")  # fmt: skip
    _json_flag(check)

    config = _parser(commands, "config", "print the effective configuration, secrets masked",
                     "interop config --json")  # fmt: skip
    _json_flag(config)
    config.add_argument(
        "--example", action="store_true", help="print .env.example: every setting and its default"
    )

    from interop import auth_cli

    auth_cli.add_parsers(commands, _parser)

    _parser(commands, "mllp", "run the HL7 v2 MLLP listener alone (serve runs it too)",
            "INTEROP_MLLP_PORT=2575 interop mllp")  # fmt: skip
    hl7 = _parser(commands, "hl7", "HL7 v2 messages: send, list, show, replay",
                  "interop hl7 list --status failed")  # fmt: skip
    hl7_commands = hl7.add_subparsers(dest="hl7_command", required=True, metavar="SUBCOMMAND")
    send = _parser(hl7_commands, "send", "frame and send files over MLLP, print the ACK codes",
                   "interop hl7 send examples/hl7/oru-r01.hl7 --port 2575")  # fmt: skip
    send.add_argument("files", nargs="+", help="files of HL7 v2 messages (batches are split)")
    send.add_argument("--host", help="MLLP host (INTEROP_MLLP_HOST)")
    send.add_argument("--port", type=int, help="MLLP port (INTEROP_MLLP_PORT)")
    send.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for each ACK (default 30)")  # fmt: skip
    _json_flag(send)

    lst = _parser(hl7_commands, "list", "list inbox messages, newest first",
                  "interop hl7 list --type ORU^R01 --since 2024-01-01")  # fmt: skip
    lst.add_argument("--status", choices=["received", "processed", "failed", "duplicate"],
                     help="only messages in this state")  # fmt: skip
    lst.add_argument("--type", help="message type, e.g. ORU^R01")
    lst.add_argument("--sender", help="MSH-3^MSH-4")
    lst.add_argument("--since", type=parse_time, help="received at or after (ISO date/time)")
    lst.add_argument("--until", type=parse_time, help="received before (ISO date/time)")
    lst.add_argument("--flag", help="flagged messages only, e.g. control-id-reuse")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _json_flag(lst)
    show = _parser(hl7_commands, "show", "one message: raw, status, error, resources",
                   "interop hl7 show 42")  # fmt: skip
    show.add_argument("id", type=int, help="the message id (first column of `hl7 list`)")
    _json_flag(show)
    replay = _parser(hl7_commands, "replay", "map a stored message again",
                     "interop hl7 replay --failed")  # fmt: skip
    replay.add_argument("id", type=int, nargs="?", help="the message id")
    replay.add_argument("--failed", action="store_true", help="replay every failed message")
    _json_flag(replay)

    from interop import imaging_cli

    imaging_cli.add_parsers(commands, _parser)
    worker = _parser(commands, "worker", "run background work: with INTEROP_REDIS_URL a Celery "
                     "worker (AI, Bulk Data, outbox consumers, subscription deliveries; needs the "
                     "'worker' extra); without, the server's background services and no HTTP API",
                     "INTEROP_REDIS_URL=redis://127.0.0.1:6379/0 interop worker")  # fmt: skip
    worker.add_argument(
        "--queues", help="comma-separated queues (INTEROP_AI_QUEUES; GPU hosts: ai.infer)"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="processes (default 1)")
    ai = _parser(commands, "ai", "AI analyses: jobs, models", "interop ai jobs --status failed")
    ai_commands = ai.add_subparsers(dest="ai_command", required=True, metavar="SUBCOMMAND")
    jobs = _parser(ai_commands, "jobs", "list AI jobs (Task, study, model, step), newest first",
                   "interop ai jobs --limit 10")  # fmt: skip
    jobs.add_argument("--status", choices=["queued", "running", "done", "failed"],
                      help="only jobs in this state")  # fmt: skip
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _json_flag(jobs)
    models = _parser(ai_commands, "models", "list the installed model plugins",
                     "interop ai models --json")  # fmt: skip
    _json_flag(models)

    from interop import cds_cli, openemr_cli

    openemr_cli.add_parsers(commands, _parser)
    cds_cli.add_parsers(commands, _parser)
    load = _parser(commands, "import", "load NDJSON files through the write path",
                   "interop import examples/ndjson/patients.ndjson")  # fmt: skip
    load.add_argument("files", nargs="+", help="NDJSON files, one resource per line")
    load.add_argument("--batch", type=int, default=500, help="resources per transaction")
    _json_flag(load)

    from interop import demo

    demo.add_parser(commands, _parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line the operator can act on, no traceback
        if args.traceback:
            raise
        print(f"error: {explain(exc)}", file=sys.stderr)
        return 1


def explain(exc: BaseException) -> str:
    """One line saying what failed and what to do about it."""
    from sqlalchemy.exc import OperationalError

    from interop.features import FeatureMissing
    from interop.runtime import SchemaBehind

    if isinstance(exc, CliError | FeatureMissing | SchemaBehind):
        return str(exc)
    if isinstance(exc, OperationalError):
        url = get_settings().masked()["INTEROP_DATABASE_URL"]
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return f"cannot use the database {url}: {first} (check INTEROP_DATABASE_URL)"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first} (run `interop --traceback ...` for details)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("interop-server")
    except PackageNotFoundError:
        return "0.0.0"


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "worker":
        return _worker(args)
    if args.command == "ai":
        return _ai(args)
    if args.command == "cds":
        from cds_hooks.clients import CdsClients
        from interop import cds_cli

        write = args.cds_clients_command != "list"
        return cds_cli.run(args, CdsClients(_runtime(1, write=write).engine))
    if args.command == "openemr":
        return openemr_cli.run(args, get_settings())
    if args.command == "import":
        from interop import import_cli

        return import_cli.run(get_settings(), args.files, max(1, args.batch), args.json)
    if args.command in ("keys", "users", "clients", "token", "launch"):
        from interop import auth_cli

        write = auth_cli.writes(args)
        return auth_cli.run(args, _runtime(1, write=write).auth_server())
    if args.command == "mllp":
        return _mllp()
    if args.command == "hl7":
        return _hl7_send(args) if args.hl7_command == "send" else _hl7_inbox(args)
    if args.command == "imaging":
        return imaging_cli.run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db(args)
    if args.command == "config":
        if args.example:
            from interop.settings import env_example

            print(env_example(), end="")
            return 0
        return _config(args.json)
    if args.command == "demo":
        from interop import demo

        return demo.run(args, get_settings())
    return 2


def _serve(args: argparse.Namespace) -> int:
    import os
    import signal

    import uvicorn

    from interop import process_metrics
    from interop.logs import configure
    from interop.runtime import Runtime

    process_metrics.prepare()  # before the workers fork: they all write their counts there
    for flag, env in (
        ("host", "INTEROP_HOST"),
        ("port", "INTEROP_PORT"),
        ("workers", "INTEROP_WORKERS"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    if args.no_background:
        os.environ["INTEROP_BACKGROUND"] = "false"
    get_settings.cache_clear()
    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    log = logging.getLogger("interop")
    from interop import bootstrap, features

    for feature in features.required_by(settings):
        features.require(feature)
    setup = Runtime(settings, migrate=True, pool_size=1)
    auth = setup.auth_server()
    auth.keys.load()  # the first signing key, before workers fork: they share it
    bootstrap.first_run(auth.registry, settings)  # an empty database gets its admin user
    setup.close()
    log.info(
        "starting",
        extra={
            "fhir_base": settings.effective_base_url,
            "auth": settings.auth,
            "workers": settings.workers,
        },
    )

    def stop_on_sigterm(_sig: int, _frame: object) -> None:
        raise SystemExit(0)

    # uvicorn re-raises the signal it shut down on; as an exception it reaches `finally`
    # below, so the MLLP listener drains instead of dying with the process
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # One worker: the app runs the MLLP listener and the syncs as its services (so /readyz
    # reports them). Several workers: they run once, here, beside uvicorn.
    channels = None
    if settings.workers > 1:
        channels = Runtime(settings, migrate=False, pool_size=2)
        channels.add_channel_services(background=settings.background)
        channels.services.start()
    try:
        uvicorn.run(
            "interop.app:create_app_without_migrations",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=None,
            access_log=False,
            server_header=False,
            # uvicorn kills a worker that does not answer its ping in time (default 5 s): a
            # worker building its runtime on a busy host takes longer and was killed, again
            timeout_worker_healthcheck=30,
        )
    finally:
        if channels is not None:
            channels.close()  # the listener drains, then the syncs stop
    return 0


def _runtime(pool_size: int = 2, write: bool = False):  # type: ignore[no-untyped-def]
    """The runtime a command works on; never migrates a schema (interop.runtime.open_runtime)."""
    from interop.runtime import open_runtime

    return open_runtime(get_settings(), write, pool_size)


def _mllp() -> int:
    import asyncio

    from hl7_listener.runner import serve
    from interop.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    runtime = _runtime(settings.db_pool_size, write=True)
    try:
        asyncio.run(serve(runtime.hl7_config(), runtime.hl7_processor()))
    finally:
        runtime.close()
    return 0


def _hl7_send(args: argparse.Namespace) -> int:
    import socket
    from pathlib import Path

    from hl7_listener.mllp import EB, frame
    from interop.progress import bar
    from mappers.hl7v2.parser import split_batch

    settings = get_settings()
    host, port = args.host or settings.mllp_host, args.port or settings.mllp_port
    messages = [(name, raw) for name in args.files for raw in split_batch(Path(name).read_bytes())]
    results = []
    try:
        sock = socket.create_connection((host, port), timeout=args.timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(
            f"cannot connect to the MLLP listener at {host}:{port} ({reason}): is the server "
            "running (./scripts/serve)? Otherwise pass --host/--port or set INTEROP_MLLP_PORT"
        ) from exc
    with sock, bar(args.json) as progress:
        task = progress.add_task("sending", total=len(messages), note="")
        for name, raw in messages:
            try:
                sock.sendall(frame(raw))
                buf = b""
                while EB not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            except OSError as exc:
                raise CliError(
                    f"the MLLP connection to {host}:{port} failed while sending {name} "
                    f"({exc.strerror or type(exc).__name__}): check the server's log"
                ) from exc
            if not buf:
                raise CliError(f"{host}:{port} closed the connection without an ACK for {name}")
            ack = buf.strip(b"\x0b\x1c\r").decode("utf-8", "replace")
            msa = next((s for s in ack.split("\r") if s.startswith("MSA")), "MSA||")
            results.append({"file": name, "ack": ack, "code": msa.split(msa[3:4] or "|")[1]})
            progress.advance(task)
    if args.json:
        print(json.dumps({"sent": len(results), "results": results}))
    else:
        for r in results:
            print(f"{r['file']}: {r['code']}")
    return 0 if all(r["code"] in ("AA", "CA") for r in results) else 1


def _hl7_inbox(args: argparse.Namespace) -> int:
    proc = _runtime(write=args.hl7_command == "replay").hl7_processor()
    if args.hl7_command == "list":
        found = proc.inbox.list(
            args.status,
            args.type,
            args.sender,
            args.limit,
            since=args.since,
            until=args.until,
            flag=args.flag,
        )
        rows = [r.as_dict() for r in found]
        if args.json:
            print(json.dumps({"messages": rows}))
        for r in [] if args.json else rows:
            flags = " ".join(r["flags"])
            print(f"{r['id']:>8} {r['status']:<10} {r['type']:<10} {r['sender']} {r['controlId']}"
                  + (f" [{flags}]" if flags else ""))  # fmt: skip
        return 0
    if args.hl7_command == "show":
        row = proc.inbox.get(args.id)
        if row is None:
            print(f"no message {args.id}", file=sys.stderr)
            return 1
        out = row.as_dict() | {"raw": row.raw.decode("latin-1")}
        if args.json:
            print(json.dumps(out))
        else:
            for key, value in out.items():
                print(f"{key}: {value}")
        return 0
    if args.failed:
        ids = [r.pk for r in proc.inbox.list(status="failed", limit=100000)]
    elif args.id is not None:
        ids = [args.id]
    else:
        print("give a message id or --failed", file=sys.stderr)
        return 2
    from interop.progress import bar

    results = {}
    with bar(args.json or not args.failed) as progress:
        task = progress.add_task("replaying", total=len(ids), note="")
        for pk in ids:
            try:
                results[str(pk)] = proc.replay(pk)
            except KeyError:
                results[str(pk)] = "not found"
            progress.advance(task)
    if args.json:
        print(json.dumps({"replayed": results}))
    else:
        for pk_s, status in results.items():
            print(f"{pk_s}: {status}")
    return 0 if all(v == "processed" for v in results.values()) else 1


def _worker(args: argparse.Namespace) -> int:
    import os

    from interop.logs import configure

    settings = get_settings()
    if settings.redis_url:
        from interop import features

        features.require(features.WORKER)
        features.require(features.AI)
    configure(settings.log_level, settings.log_format)
    from interop import process_metrics
    from interop.metrics import serve_worker_metrics

    process_metrics.prepare()  # before the pool forks: /metrics sums every pool process
    serve_worker_metrics(settings)
    if not settings.redis_url:
        return _background_worker(settings)
    from ai_worker.celery_app import bind
    from interop import (
        bulk_worker,  # noqa: F401 - registers the bulk.run task
        outbox_relay,  # noqa: F401 - registers outbox.handle, subscriptions.deliver
    )

    celery = bind(_runtime_config(settings).ai_config(), bulk_worker.ai_service)

    queues = args.queues or settings.ai_queues
    celery.worker_main(
        [
            "worker",
            "--queues", queues,
            "--concurrency", str(args.concurrency),
            "--prefetch-multiplier", "1",
            "--loglevel", settings.log_level.upper(),
            "--hostname", f"interop-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ]
    )  # fmt: skip
    return 0


def _background_worker(settings) -> int:  # type: ignore[no-untyped-def]
    """Without Redis: the app's background services (outbox consumers, AI and Bulk Data
    runners, deliveries, the singleton syncs and sweepers, under their leases) and no HTTP
    API, until SIGTERM or SIGINT. Adding such workers adds standbys and job threads."""
    import signal
    import threading

    from interop.app import create_app

    log = logging.getLogger("interop")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    app = create_app(settings.model_copy(update={"background": True}), migrate=True)
    runtime = app.state.runtime
    runtime.add_channel_services(mllp=False)
    runtime.services.start()
    log.info("worker ready", extra={"services": [s.name for s in runtime.services.all]})
    print("interop worker ready.", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        runtime.close()
    return 0


def _ai(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.ai_command == "models":
        from interop import features

        features.require(features.AI)
        from ai_worker.plugins import Registry

        plugins = [
            {"name": p.name, "version": p.version, "manufacturer": p.manufacturer,
             "modalities": sorted(p.modalities), "description": p.description}
            for p in Registry.load(_runtime_config(settings).ai_config())
        ]  # fmt: skip
        if args.json:
            print(json.dumps({"models": plugins}))
        for p in [] if args.json else plugins:
            print(f"{p['name']:<20} {p['version']:<10} {','.join(p['modalities']):<8} "
                  f"{p['manufacturer']}")  # fmt: skip
        return 0
    from ai_worker.jobs import Jobs

    rows = [j.as_dict() for j in Jobs(_runtime(1).engine).list(args.status, args.limit)]
    if args.json:
        print(json.dumps({"jobs": rows}))
        return 0
    print(
        f"{'TASK':<44} {'MODEL':<20} {'STATUS':<8} {'STEP':<10} {'TRIES':>5}  "
        "STUDY / REPORT / ERROR"
    )
    for r in rows:
        tail = r["report"] or r["error"] or r["study"]
        print(f"{r['task']:<44} {r['model'] + ' ' + r['version']:<20} {r['status']:<8} "
              f"{r['step']:<10} {r['attempts']:>5}  {tail}")  # fmt: skip
    return 0


def _db(args: argparse.Namespace) -> int:
    """`upgrade` migrates; `current` and `check` only read where the schema stands."""
    from fhir_server.store.db import schema_revisions, upgrade
    from interop.runtime import Runtime

    settings = get_settings()
    url = settings.masked()["INTEROP_DATABASE_URL"]
    runtime = Runtime(settings, migrate=False, pool_size=1)
    try:
        if args.db_command == "upgrade":
            upgrade(runtime.engine)
            print(f"database at newest schema: {url}")
            return 0
        current, newest = schema_revisions(runtime.engine)
    finally:
        runtime.close()
    behind = current != newest
    state = "current" if not behind else ("empty" if not current else "behind")
    if args.json:
        print(json.dumps({"database": url, "current": sorted(current), "newest": sorted(newest),
                          "state": state}))  # fmt: skip
    else:
        print(f"{url}: {', '.join(sorted(current)) or 'no schema'} "
              f"(newest {', '.join(sorted(newest))}; {state})")  # fmt: skip
        if behind and args.db_command == "check":
            print("run `interop db upgrade` (or start the server) to migrate", file=sys.stderr)
    return 1 if behind and args.db_command == "check" else 0


def _runtime_config(settings):  # type: ignore[no-untyped-def]
    """The runtime's config builders without a database (for commands that need none)."""
    from interop.runtime import ChannelConfigs

    return ChannelConfigs(settings)


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
