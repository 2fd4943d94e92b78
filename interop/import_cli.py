"""`interop import FILE...`: load NDJSON files (Synthea output, an export) through the one
write path, with a progress bar on stderr and a summary on stdout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fhir_server.bulk.importer import ImportCounts, LineError, file_lines, import_lines
from interop.progress import bar
from interop.runtime import open_runtime
from interop.settings import Settings

MAX_SHOWN_ERRORS = 20


def run(settings: Settings, files: list[str], batch: int, as_json: bool) -> int:
    paths = [Path(f) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    runtime = open_runtime(settings, write=True, pool_size=2)
    ctx = runtime.ctx
    counts = ImportCounts()
    errors: list[LineError] = []
    started = time.monotonic()
    before = 0
    with bar(as_json, counts=False) as progress:
        task = progress.add_task("importing", total=sum(p.stat().st_size for p in paths), note="")

        def show(done: int, c: ImportCounts) -> None:
            progress.update(task, completed=done, note=f"{c.loaded} loaded, {c.failed} failed")

        try:
            for path in paths:
                with open(path, "rb") as handle:
                    import_lines(
                        ctx.store,
                        str(path),
                        file_lines(handle),
                        batch,
                        errors.append,
                        on_batch=lambda c, h=handle, b=before: show(b + h.tell(), c),  # type: ignore[misc]
                        counts=counts,
                    )
                before += path.stat().st_size
                show(before, counts)
        finally:
            runtime.close()
    seconds = time.monotonic() - started
    for error in errors[:MAX_SHOWN_ERRORS]:
        print(f"{error.source}:{error.line}: {error.diagnostics}", file=sys.stderr)
    if len(errors) > MAX_SHOWN_ERRORS:
        print(f"... and {len(errors) - MAX_SHOWN_ERRORS} more errors", file=sys.stderr)
    summary = {
        "loaded": counts.loaded,
        "failed": counts.failed,
        "byType": counts.by_type,
        "seconds": round(seconds, 3),
        "errors": [
            {"file": e.source, "line": e.line, "diagnostics": e.diagnostics} for e in errors
        ][:1000],
    }
    if as_json:
        print(json.dumps(summary))
    else:
        types = ", ".join(f"{t} {n}" for t, n in sorted(counts.by_type.items()))
        print(
            f"loaded {counts.loaded} resources ({types or 'none'}), {counts.failed} failed, "
            f"in {seconds:.1f} s"
        )
    return 0 if counts.failed == 0 else 1
