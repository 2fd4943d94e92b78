"""`interop openemr sync|pending|push`: the operator's side of the OpenEMR bridge."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from interop.settings import Settings

if TYPE_CHECKING:
    from fhir_server.api.context import Context
    from openemr_bridge.config import BridgeSettings


def add_parsers(commands: Any, parser: Callable[..., Any]) -> None:
    oe = parser(commands, "openemr", "the OpenEMR bridge: sync, pending, push",
                "interop openemr sync --full")  # fmt: skip
    oe_commands = oe.add_subparsers(dest="openemr_command", required=True, metavar="SUBCOMMAND")
    sync = parser(oe_commands, "sync", "OpenEMR -> this server, through the write path",
                  "interop openemr sync --patient pid:42")  # fmt: skip
    sync.add_argument("--full", action="store_true", help="re-apply every patient from the start")
    sync.add_argument("--patient", help="only this OpenEMR patient (uuid, or pid:N)")
    sync.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    pending = parser(oe_commands, "pending", "patients that could not be created there",
                     "interop openemr pending --json")  # fmt: skip
    pending.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    push = parser(oe_commands, "push", "create one canonical Patient in OpenEMR now",
                  "interop openemr push PATIENT_ID")  # fmt: skip
    push.add_argument("patient", help="canonical Patient id")
    push.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from interop.runtime import ChannelConfigs
    from openemr_bridge.errors import OpenEmrError
    from openemr_bridge.setup import NotConfigured

    bridge = ChannelConfigs(settings).openemr_settings()
    try:
        if args.openemr_command == "sync":
            return _sync(args, bridge, settings)
        if args.openemr_command == "pending":
            return _pending(args, settings)
        return _push(args, bridge, settings)
    except (NotConfigured, OpenEmrError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _context(settings: Settings, write: bool = True) -> Context:
    """The canonical store's context (interop.runtime.open_runtime: never migrates a schema)."""
    from interop.runtime import open_runtime

    return open_runtime(settings, write, pool_size=2).ctx


def _sync(args: argparse.Namespace, bridge: BridgeSettings, settings: Settings) -> int:
    from openemr_bridge import setup
    from openemr_bridge.runner import run_sync

    setup.config(bridge)  # a missing setting is reported before the database is touched

    from interop.progress import bar

    with bar(args.json) as progress:
        task = progress.add_task("patients", total=None, note="")

        def show(summary: Any) -> None:
            progress.update(task, completed=summary.total, total=summary.expected or None,
                            note=progress_line(summary))  # fmt: skip

        summary = run_sync(bridge, _context(settings), args.full, args.patient, show)
    if args.json:
        print(json.dumps(summary.as_json()))
    else:
        print(
            f"{summary.created} created, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {summary.failed} failed"
        )
        for key, reason in summary.reasons.items():
            print(f"  failed {key}: {reason}")
    return 0 if summary.failed == 0 else 1


def progress_line(summary: Any) -> str:
    """What the sync did so far, beside its bar."""
    return (
        f"{summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {summary.failed} failed"
    )


def _pending(args: argparse.Namespace, settings: Settings) -> int:
    from interop.fhir_reads import ApiReads
    from openemr_bridge.push import pending

    rows = pending(ApiReads(_context(settings, write=False)))
    if args.json:
        print(json.dumps({"pending": rows}))
    else:
        for row in rows:
            print(f"Patient/{row['id']}  {row['name']} ({row['birthDate']})  {row['reason']}")
        print(f"{len(rows)} patient(s) waiting for data before they can be created in OpenEMR")
    return 0


def _push(args: argparse.Namespace, bridge: BridgeSettings, settings: Settings) -> int:
    from openemr_bridge import setup
    from openemr_bridge.push import push_patient

    with setup.client(bridge) as client:
        result = push_patient(_context(settings), client, setup.systems(bridge), args.patient)
    payload = {
        "status": result.status,
        "pid": result.pid,
        "uuid": result.uuid,
        "reason": result.reason,
    }
    if args.json:
        print(json.dumps(payload))
    else:
        print(" ".join(f"{k}={v}" for k, v in payload.items() if v))
    return 0 if result.status in ("created", "linked", "known") else 1
