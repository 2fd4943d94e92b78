"""The shipped alert rules and Grafana dashboard ask only for series the server exports (as
seen in a real /metrics scrape), and the alert file is in Prometheus's rule format."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci_support import IN_CI
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from interop.app import create_app
from interop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
FROM_PROMETHEUS = {"up"}  # made by Prometheus itself for every target
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
# PromQL words that are not metric names
WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "clamp_min", "clamp_max", "time", "abs", "absent",
    "absent_over_time", "changes", "resets", "vector", "scalar", "label_replace", "avg_over_time",
    "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "predict_linear",
    "timestamp", "inf", "nan", "humanizeDuration",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (roughly: what is left of it without strings,
    label matchers, grouping lists, ranges, numbers and PromQL words)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word in WORDS:
            continue
        names.add(word)
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a scrape can hold, by metric type, from a real /metrics."""
    path = tmp_path_factory.mktemp("scrape") / "interop.db"
    settings = Settings(
        database_url=f"sqlite:///{path}", auth="off", base_url="http://testserver/fhir",
        metrics="on", secret_key_file=str(path.parent / "secret.key"),
    )  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        text = client.get("/metrics").text
    app.state.store.engine.dispose()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_alerts_are_prometheus_rules() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    groups = document["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            assert "for" not in rule or DURATION.match(rule["for"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]


def promtool() -> str:
    """scripts/setup-env puts it in .venv/bin; missing: skipped locally, a failure in CI."""
    beside = Path(sys.executable).parent / "promtool"
    found = os.environ.get("INTEROP_PROMTOOL") or shutil.which("promtool")
    found = found or (str(beside) if beside.exists() else None)
    if found is None:
        if IN_CI:
            pytest.fail("promtool is required in CI (scripts/setup-env installs it)")
        pytest.skip("promtool not installed (scripts/setup-env: Debian's prometheus package)")
    return found


def test_promtool_accepts_the_rules_and_they_fire_when_they_should() -> None:
    """Prometheus's own parser, and alerts.test.yml: a silent feed, a replica down, failing
    deliveries and a stalled sync fire (and not before their time)."""
    tool = promtool()
    for command in (["check", "rules", ALERTS.name], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([tool, *command], cwd=ALERTS.parent, capture_output=True)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_prometheus_config_scrapes_the_jobs_the_alerts_name() -> None:
    config = yaml.safe_load((ALERTS.parent / "prometheus.yml").read_text())
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"interop", "interop-worker"}
    down = next(r for r in alert_rules() if r["alert"] == "InteropReplicaDown")["expr"]
    assert all(name in down for name in jobs)
    for job in jobs.values():  # /metrics is closed without the operator's token
        assert job["authorization"]["credentials_file"]


def test_alerts_cover_what_an_operator_must_hear() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    for needed in ("FeedStopped", "BacklogGrowing", "DeliveriesFailing", "SyncStalled",
                   "AiJobsFailing", "ReplicaDown"):  # fmt: skip
        assert any(needed in name for name in names), needed


def test_every_series_the_alerts_and_dashboard_read_is_exported(exported: set[str]) -> None:
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    assert len(exprs) > 20
    wanted = set().union(*(metric_names(e) for e in exprs))
    assert "interop_hl7_messages_total" in wanted and "fhir_requests_total" in wanted
    assert wanted - exported - FROM_PROMETHEUS == set()


def test_the_name_reader_finds_a_misspelt_series() -> None:
    found = metric_names('sum by (sender) (rate(interop_hl7_mesages_total{status="x"}[5m])) > 1')
    assert found == {"interop_hl7_mesages_total"}


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["gridPos"]["w"] > 0
