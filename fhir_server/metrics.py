"""The server's Prometheus series, on `prometheus_client`.

Why the library: with several processes (uvicorn workers, Celery's prefork pool) a registry per
process counts per process, and a scrape sees one of them. In multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, prepared by `interop serve` and `interop worker` before anything
imports this module: `interop.process_metrics`) every process writes its values to a shared
folder and a scrape sums them. Without it (tests, one-off commands) the values live in memory.

The series here are the ones processes count as things happen; the ones a database query knows
(backlogs, lags, queued jobs) are computed at scrape time (`interop.metrics.DatabaseCollector`),
so whichever process answers the scrape reports the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_SECONDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
SENDER_MAX = 64  # MSH-3^MSH-4 is the sender's to choose: cut, so a label stays a label
disable_created_metrics()  # `_created` samples double the output and nobody graphs them

# -- HTTP (names kept from the hand-written registry: dashboards rely on them) -------------------
REQUESTS = Counter(
    "fhir_requests",
    "FHIR requests by interaction, resource type and status",
    ("interaction", "type", "status"),
)
REQUEST_SECONDS = Histogram(
    "fhir_request_duration_seconds",
    "FHIR request latency by interaction and resource type",
    ("interaction", "type"),
    buckets=LATENCY,
)
STORE_TRANSACTIONS = Counter(
    "store_transactions", "Store write transactions by outcome", ("outcome",)
)
STORE_SECONDS = Histogram(
    "store_transaction_duration_seconds",
    "Store write transaction duration",
    ("outcome",),
    buckets=LATENCY,
)

# -- HL7 v2 -----------------------------------------------------------------------------------
HL7_MESSAGES = Counter(
    "interop_hl7_messages",
    "HL7 v2 messages by final status (processed, failed, duplicate, rejected: not stored, "
    "resend) and sender (MSH-3^MSH-4)",
    ("sender", "status"),
)
HL7_MAPPING_SECONDS = Histogram(
    "interop_hl7_mapping_seconds",
    "Time to map and apply one HL7 v2 message, by message type",
    ("message_type",),
    buckets=LATENCY,
)
HL7_LAST_MESSAGE = Gauge(
    "interop_hl7_last_message_timestamp_seconds",
    "When the last message of a sender was stored (Unix time)",
    ("sender",),
    multiprocess_mode="max",
)

# -- AI jobs ----------------------------------------------------------------------------------
AI_JOBS_FINISHED = Counter(
    "interop_ai_jobs_finished", "AI jobs that ended, by model and status (done, failed)",
    ("model", "status"),
)  # fmt: skip
AI_JOB_SECONDS = Histogram(
    "interop_ai_job_duration_seconds",
    "AI job time from request to end, by model",
    ("model",),
    buckets=JOB_SECONDS,
)

# -- Subscriptions ----------------------------------------------------------------------------
SUBSCRIPTION_DELIVERIES = Counter(
    "interop_subscription_deliveries",
    "Subscription notification attempts by channel and outcome (delivered, failed)",
    ("channel", "outcome"),
)

# -- Background services (the syncs: time since the last success is their lag) -----------------
SERVICE_LAST_SUCCESS = Gauge(
    "interop_service_last_success_timestamp_seconds",
    "When a background service's step last succeeded (Unix time)",
    ("service",),
    multiprocess_mode="max",
)
SERVICE_FAILURES = Gauge(
    "interop_service_failures",
    "Failed steps in a row of a background service (0: healthy)",
    ("service",),
    multiprocess_mode="max",
)


def sender_label(sender: str) -> str:
    return (sender or "unknown")[:SENDER_MAX]


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Joined:
    """Several collectors read as one registry, for one scrape."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The exposition text (body, content type): every process's values, plus `extra`."""
    base: Collector = (
        multiprocess.MultiProcessCollector(None) if multiprocess_dir() else REGISTRY  # type: ignore[no-untyped-call]
    )
    return generate_latest(_Joined([base, *extra])), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
