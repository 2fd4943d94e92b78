"""A model plugin for tests: the classical CT analysis, slowed down, recording each run.

Loaded through INTEROP_AI_EXTRA_PLUGINS ("slow_plugin:provide") by the test's app and by the
worker processes it starts, so a test can kill a worker while it is inside `run`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ai_worker.pixels.volume import Volume
from ai_worker.plugins import Findings, StudyInfo
from ai_worker.plugins.ct_classical import CtClassicalPlugin


class SlowPlugin(CtClassicalPlugin):
    name = "slow-ct"
    version = "1"

    def run(self, volume: Volume, study: StudyInfo) -> Findings:
        marker = os.environ.get("INTEROP_TEST_SLOW_MARKER")
        if marker:
            with open(marker, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("INTEROP_TEST_SLOW_SECONDS", "0.5")))
        return super().run(volume, study)


def provide(settings: Any) -> list[SlowPlugin]:
    return [SlowPlugin()]
