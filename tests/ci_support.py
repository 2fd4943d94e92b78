"""What a test does when something it needs is missing: fails in CI (CI=true: the real
services and tools are required there, a skip would hide a broken setup), skips elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(f"{reason} (set CI=true to make this a failure)")
