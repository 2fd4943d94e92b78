"""Reading a /metrics scrape the way Prometheus does (label order does not matter)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def names(text: str) -> set[str]:
    """Every sample name in a scrape (histograms give _bucket, _sum, _count)."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples} | {
        f.name for f in text_string_to_metric_families(text)
    }
