"""Progress bars of the long commands (`import`, `hl7 send`, `hl7 replay --failed`, `imaging
backfill`, `openemr sync`, `demo`): one `rich` bar on stderr, shown only on a terminal and never
with `--json`, so stdout stays the command's result."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, highlight=False)


@contextmanager
def bar(as_json: bool = False, counts: bool = True) -> Iterator[Progress]:
    """A Progress to add tasks to; `counts` shows done/total (else a percentage, for bytes)."""
    columns = [
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if counts else TaskProgressColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    enabled = not as_json and sys.stderr.isatty()
    with Progress(*columns, console=stderr, disable=not enabled, transient=False) as progress:
        yield progress
