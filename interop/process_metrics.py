"""The folder where every process of `interop serve` / `interop worker` writes its metrics.

Set up before the processes fork (and before `prometheus_client` decides how to store values),
emptied at start so a restart does not add the previous run's counts to the new ones. An
operator may choose the folder (`PROMETHEUS_MULTIPROC_DIR`, e.g. a tmpfs); otherwise a fresh
temporary folder is made. Nothing here imports `prometheus_client` at module level: importing
it first would fix its value storage to in-memory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> Path:
    """Make (or empty) the metrics folder and point this process and its children to it."""
    chosen = os.environ.get(VARIABLE)
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="interop-metrics-"))
        os.environ[VARIABLE] = str(folder)
        atexit.register(shutil.rmtree, folder, True)  # ours: gone with the command
    if "prometheus_client" in sys.modules:  # imported already (a test, an embedding program)
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    return folder
