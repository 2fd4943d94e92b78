"""`interop imaging ...`: backfill and reconcile the PACS into ImagingStudy resources."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from interop.settings import get_settings


def add_parsers(commands: Any, parser: Callable[..., Any]) -> None:
    imaging = parser(commands, "imaging", "DICOM / PACS -> ImagingStudy: backfill, reconcile",
                     "interop imaging backfill --since 2024-01-01")  # fmt: skip
    sub = imaging.add_subparsers(dest="imaging_command", required=True, metavar="SUBCOMMAND")
    backfill = parser(sub, "backfill", "sync every study the PACS has",
                      "interop imaging backfill --since 2024-01-01")  # fmt: skip
    backfill.add_argument("--since", type=date.fromisoformat, help="only studies from DATE on")
    backfill.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    reconcile = parser(sub, "reconcile", "delete/update ImagingStudies the PACS changed",
                       "interop imaging reconcile --json")  # fmt: skip
    reconcile.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from dicomweb_bridge.poller import Poller
    from interop.progress import bar
    from interop.runtime import open_runtime

    runtime = open_runtime(get_settings(), write=True, pool_size=2)
    bridge = runtime.imaging_bridge()
    if bridge is None:
        runtime.close()
        print("error: imaging is off: set INTEROP_DICOMWEB_URL or INTEROP_ORTHANC_URL",
              file=sys.stderr)  # fmt: skip
        return 2
    poller = Poller(bridge.pacs, bridge.syncer, bridge.state)
    started = time.perf_counter()
    if args.imaging_command == "backfill":
        with bar(args.json) as progress:
            task = progress.add_task("studies", total=None, note="")
            summary = poller.backfill(
                args.since, lambda done, total: progress.update(task, completed=done, total=total)
            )
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
    runtime.close()
    return 1 if summary.failed else 0
