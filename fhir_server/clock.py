"""Server time as UTC epoch microseconds, and its FHIR `instant` / HTTP-date renderings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime


def now_us() -> int:
    return time.time_ns() // 1000


def to_instant(us: int) -> str:
    """FHIR instant at the stored (microsecond) precision, so `_since` round-trips exactly."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{us % 1_000_000:06d}Z"


def to_http_date(us: int) -> str:
    return format_datetime(datetime.fromtimestamp(us // 1_000_000, tz=UTC), usegmt=True)


def mostly_waited(wall: float, cpu: float) -> bool:
    """Did the process run for less than half of `wall` seconds (`cpu`: its CPU time then)?
    A slow step that waited for the disk or for a core is worth moving to threads; one that
    waited for the GIL while another thread of the process ran is not (they would wait too)."""
    return cpu < wall / 2
