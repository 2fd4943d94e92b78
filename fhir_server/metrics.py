"""A small Prometheus registry: request and store-transaction counters and latency histograms.

Kept in-process and dependency-free; `/metrics` renders the text exposition format (0.0.4).
With several uvicorn workers each process reports its own series (scrape per worker or run one).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Latency histogram keyed by a label tuple."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], list[int]] = defaultdict(
            lambda: [0] * (len(BUCKETS) + 1)
        )
        self._sums: dict[tuple[str, ...], float] = defaultdict(float)

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        slot = bisect_left(BUCKETS, seconds)
        with self._lock:
            self._counts[key][slot] += 1
            self._sums[key] += seconds

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = [(k, list(v), self._sums[k]) for k, v in self._counts.items()]
        for key, counts, total in sorted(items):
            label = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                sep = "," if label else ""
                lines.append(f'{self.name}_bucket{{{label}{sep}le="{le}"}} {running}')
            lines.append(f"{self.name}_sum{{{label}}} {total}")
            lines.append(f"{self.name}_count{{{label}}} {running}")
        return lines


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], int] = defaultdict(int)

    def inc(self, key: tuple[str, ...], amount: int = 1) -> None:
        with self._lock:
            self._values[key] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            label = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            lines.append(f"{self.name}{{{label}}} {value}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


REQUESTS = Counter(
    "fhir_requests_total",
    "FHIR requests by interaction, resource type and status",
    ("interaction", "type", "status"),
)
REQUEST_SECONDS = Histogram(
    "fhir_request_duration_seconds",
    "FHIR request latency by interaction and resource type",
    ("interaction", "type"),
)
STORE_TRANSACTIONS = Counter(
    "store_transactions_total", "Store write transactions by outcome", ("outcome",)
)
STORE_SECONDS = Histogram(
    "store_transaction_duration_seconds", "Store write transaction duration", ("outcome",)
)


def render() -> str:
    lines: list[str] = []
    for metric in (REQUESTS, REQUEST_SECONDS, STORE_TRANSACTIONS, STORE_SECONDS):
        lines.extend(metric.render())
    return "\n".join(lines) + "\n"
