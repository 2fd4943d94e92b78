"""The `interop` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from interop.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    from hl7_listener.inbox import parse_time

    parser = argparse.ArgumentParser(prog="interop", description="HL7/FHIR interoperability server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the FHIR API (migrates the database first)")
    serve.add_argument("--host", help="listen address (INTEROP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (INTEROP_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (INTEROP_WORKERS, default 1)")
    serve.add_argument(
        "--no-background",
        action="store_true",
        help="a pure API replica: no outbox consumers, jobs, deliveries, syncs or sweeps "
        "(INTEROP_BACKGROUND=false); other replicas and `interop worker` run them",
    )

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations")

    config = commands.add_parser("config", help="print the effective configuration, secrets masked")
    config.add_argument("--json", action="store_true", help="one JSON object on stdout")

    from interop import auth_cli

    auth_cli.add_parsers(commands)

    commands.add_parser("mllp", help="run the HL7 v2 MLLP listener alone")
    hl7 = commands.add_parser("hl7", help="HL7 v2 messages")
    hl7_commands = hl7.add_subparsers(dest="hl7_command", required=True)
    send = hl7_commands.add_parser("send", help="frame and send files over MLLP, print ACKs")
    send.add_argument("files", nargs="+")
    send.add_argument("--host", help="MLLP host (INTEROP_MLLP_HOST)")
    send.add_argument("--port", type=int, help="MLLP port (INTEROP_MLLP_PORT)")
    send.add_argument("--json", action="store_true", help="one JSON object on stdout")

    lst = hl7_commands.add_parser("list", help="list inbox messages, newest first")
    lst.add_argument("--status", choices=["received", "processed", "failed", "duplicate"])
    lst.add_argument("--type", help="message type, e.g. ORU^R01")
    lst.add_argument("--sender", help="MSH-3^MSH-4")
    lst.add_argument("--since", type=parse_time, help="received at or after (ISO date/time)")
    lst.add_argument("--until", type=parse_time, help="received before (ISO date/time)")
    lst.add_argument("--flag", help="flagged messages only, e.g. control-id-reuse")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true", help="one JSON object on stdout")
    show = hl7_commands.add_parser("show", help="one message: raw, status, error, resources")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="one JSON object on stdout")
    replay = hl7_commands.add_parser("replay", help="map a stored message again")
    replay.add_argument("id", type=int, nargs="?")
    replay.add_argument("--failed", action="store_true", help="replay every failed message")
    replay.add_argument("--json", action="store_true", help="one JSON object on stdout")

    from interop import imaging_cli

    imaging_cli.add_parsers(commands)
    worker = commands.add_parser(
        "worker",
        help="run background work: with INTEROP_REDIS_URL a Celery worker (AI, Bulk Data, "
        "outbox consumers, subscription deliveries); without, the server's background "
        "services with no HTTP API",
    )
    worker.add_argument(
        "--queues", help="comma-separated queues (INTEROP_AI_QUEUES; GPU hosts: ai.infer)"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="processes (default 1)")
    ai = commands.add_parser("ai", help="AI analyses")
    ai_commands = ai.add_subparsers(dest="ai_command", required=True)
    jobs = ai_commands.add_parser(
        "jobs", help="list AI jobs (Task, study, model, step), newest first"
    )
    jobs.add_argument("--status", choices=["queued", "running", "done", "failed"])
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="one JSON object on stdout")
    models = ai_commands.add_parser("models", help="list the installed model plugins")
    models.add_argument("--json", action="store_true", help="one JSON object on stdout")

    from interop import openemr_cli

    openemr_cli.add_parsers(commands)
    load = commands.add_parser("import", help="load NDJSON files through the write path")
    load.add_argument("files", nargs="+", help="NDJSON files, one resource per line")
    load.add_argument("--batch", type=int, default=500, help="resources per transaction")
    load.add_argument("--json", action="store_true", help="one JSON object on stdout")

    args = parser.parse_args(argv)
    if args.command == "worker":
        return _worker(args)
    if args.command == "ai":
        return _ai(args)
    if args.command == "openemr":
        return openemr_cli.run(args, get_settings())
    if args.command == "import":
        from interop import import_cli

        return import_cli.run(get_settings(), args.files, max(1, args.batch), args.json)
    if args.command in ("keys", "users", "clients", "token", "launch"):
        return auth_cli.run(args, _auth_server())
    if args.command == "mllp":
        return _mllp()
    if args.command == "hl7":
        return _hl7_send(args) if args.hl7_command == "send" else _hl7_inbox(args)
    if args.command == "imaging":
        return imaging_cli.run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db_upgrade()
    if args.command == "config":
        return _config(args.json)
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
    setup = Runtime(settings, migrate=True, pool_size=1)
    setup.auth_server().keys.load()  # the first signing key, before workers fork: they share it
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


def _runtime(pool_size: int = 2):  # type: ignore[no-untyped-def]
    """The one runtime a command works on (migrated: a command may be the first run)."""
    from interop.runtime import Runtime

    return Runtime(get_settings(), migrate=True, pool_size=pool_size)


def _auth_server():  # type: ignore[no-untyped-def]
    return _runtime(1).auth_server()


def _mllp() -> int:
    import asyncio

    from hl7_listener.runner import serve
    from interop.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    runtime = _runtime(settings.db_pool_size)
    try:
        asyncio.run(serve(runtime.hl7_config(), runtime.hl7_processor()))
    finally:
        runtime.close()
    return 0


def _hl7_send(args: argparse.Namespace) -> int:
    import socket
    from pathlib import Path

    from hl7_listener.mllp import EB, frame
    from mappers.hl7v2.parser import split_batch

    settings = get_settings()
    host, port = args.host or settings.mllp_host, args.port or settings.mllp_port
    results = []
    with socket.create_connection((host, port), timeout=30) as sock:
        for name in args.files:
            for raw in split_batch(Path(name).read_bytes()):
                sock.sendall(frame(raw))
                buf = b""
                while EB not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                ack = buf.strip(b"\x0b\x1c\r").decode("utf-8", "replace")
                msa = next((s for s in ack.split("\r") if s.startswith("MSA")), "MSA||")
                results.append({"file": name, "ack": ack, "code": msa.split(msa[3:4] or "|")[1]})
    if args.json:
        print(json.dumps({"sent": len(results), "results": results}))
    else:
        for r in results:
            print(f"{r['file']}: {r['code']}")
    return 0 if all(r["code"] in ("AA", "CA") for r in results) else 1


def _hl7_inbox(args: argparse.Namespace) -> int:
    proc = _runtime().hl7_processor()
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
    results = {}
    for pk in ids:
        try:
            results[str(pk)] = proc.replay(pk)
        except KeyError:
            results[str(pk)] = "not found"
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


def _db_upgrade() -> int:
    settings = get_settings()
    _runtime(1).close()  # building the runtime applies the migrations
    print(f"database at newest schema: {settings.masked()['INTEROP_DATABASE_URL']}")
    return 0


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
