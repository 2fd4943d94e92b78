"""`interop imaging ...`: backfill and reconcile the PACS into ImagingStudy resources."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from typing import Any

from interop.settings import get_settings


def add_parsers(commands: Any) -> None:
    imaging = commands.add_parser("imaging", help="DICOM / Orthanc -> ImagingStudy")
    sub = imaging.add_subparsers(dest="imaging_command", required=True)
    backfill = sub.add_parser("backfill", help="sync every study the PACS has")
    backfill.add_argument("--since", type=date.fromisoformat, help="only studies from DATE on")
    backfill.add_argument("--json", action="store_true", help="one JSON object on stdout")
    reconcile = sub.add_parser("reconcile", help="delete/update ImagingStudies the PACS changed")
    reconcile.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _bar(done: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / max(time.perf_counter() - started, 1e-6)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                     f"{rate:.1f} studies/s")  # fmt: skip
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from dicomweb_bridge.poller import Poller
    from dicomweb_bridge.service import Bridge
    from fhir_server.api.interactions import Context
    from fhir_server.store.audit import audited
    from fhir_server.store.db import create_db_engine, upgrade
    from fhir_server.store.repository import Store

    settings = get_settings()
    engine = create_db_engine(settings.effective_database_url, 2)
    upgrade(engine)
    base = settings.effective_base_url
    bridge = Bridge.build(
        settings,
        Context(audited(Store(engine, base), settings.auth_enabled and settings.auth_audit), base),
    )
    if bridge is None:
        print("imaging is off: set INTEROP_DICOMWEB_URL or INTEROP_ORTHANC_URL", file=sys.stderr)
        return 2
    poller = Poller(bridge.pacs, bridge.syncer, bridge.state)
    started = time.perf_counter()
    if args.imaging_command == "backfill":
        show = None if args.json or not sys.stderr.isatty() else (
            lambda done, total: _bar(done, total, started))  # fmt: skip
        summary = poller.backfill(args.since, show)
        if show is not None:
            sys.stderr.write("\n")
    else:
        summary = poller.reconcile()
    seconds = time.perf_counter() - started
    out = {"studies": summary.seen, "outcomes": summary.outcomes, "failed": summary.failed,
           "seconds": round(seconds, 3)}  # fmt: skip
    if args.json:
        print(json.dumps(out))
    else:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.outcomes.items())) or "nothing"
        print(f"{summary.seen} studies in {seconds:.1f} s: {counts}; {len(summary.failed)} failed")
        for uid, reason in summary.failed.items():
            print(f"  {uid}: {reason}")
    bridge.close()
    engine.dispose()
    return 1 if summary.failed else 0
