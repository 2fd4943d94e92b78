"""deploy/kubernetes/: valid against the Kubernetes API schemas (kubernetes-validate ships
them, so this runs offline) and holding what a production deployment needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from interop.cli import main
from interop.settings import Settings

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSION = "1.30.0"  # oldest Kubernetes the manifests are meant for


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(FOLDER.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("name,document", documents(), ids=lambda v: str(v)[:40])
def test_every_manifest_matches_the_kubernetes_schema(name: str, document: dict) -> None:
    kubernetes_validate.validate(document, VERSION, strict=True)  # unknown fields fail too


def test_a_broken_manifest_is_refused() -> None:
    broken = by_kind("Deployment")["interop-api"] | {}
    broken = yaml.safe_load(yaml.safe_dump(broken))
    containers(broken)[0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_api_and_worker_deployments_probe_limit_and_read_secrets_from_files() -> None:
    deployments = by_kind("Deployment")
    api, worker = deployments["interop-api"], deployments["interop-worker"]
    (api_container,) = containers(api)
    (worker_container,) = containers(worker)
    assert api_container["command"][:2] == ["interop", "serve"]
    assert worker_container["command"][:2] == ["interop", "worker"]
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["spec"]["replicas"] >= 2
    config = by_kind("ConfigMap")["interop-config"]["data"]
    port = next(p for p in worker_container["ports"] if p["name"] == "metrics")["containerPort"]
    assert int(config["INTEROP_WORKER_METRICS_PORT"]) == port
    fields = Settings.model_fields
    for workload in (api, worker):
        spec = workload["spec"]["template"]["spec"]
        mounted = {m["mountPath"] for c in containers(workload) for m in c["volumeMounts"]}
        for container in containers(workload):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            for variable in container.get("env", []):
                name, value = variable["name"], variable.get("value", "")
                assert name.endswith("_FILE"), name  # secrets as files, never as values
                assert any(value.startswith(m + "/") for m in mounted), (name, value)
                setting = name.removeprefix("INTEROP_").lower()
                assert setting in fields or setting.removesuffix("_file") in fields, name
            assert "env" in container and not any("valueFrom" in v for v in container["env"])
        assert spec["securityContext"]["runAsNonRoot"] is True
        bulk = next(v for v in spec["volumes"] if v["name"] == "bulk")
        assert bulk["persistentVolumeClaim"]["claimName"] == "interop-bulk"
    claim = by_kind("PersistentVolumeClaim")["interop-bulk"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by API and workers
    for key in config:
        if key.startswith("INTEROP_"):
            assert key.removeprefix("INTEROP_").lower() in fields, key  # no misspelt setting


def test_services_for_http_and_mllp() -> None:
    services = by_kind("Service")
    ports = {p["targetPort"] for s in services.values() for p in s["spec"]["ports"]}
    assert {"http", "mllp"} <= ports
    api_ports = {p["name"] for p in containers(by_kind("Deployment")["interop-api"])[0]["ports"]}
    assert ports <= api_ports


def test_migration_job_and_worker_autoscaler() -> None:
    (job,) = by_kind("Job").values()
    (container,) = containers(job)
    assert container["command"] == ["interop", "db", "upgrade"]
    with pytest.raises(SystemExit) as done:
        main(["db", "upgrade", "--help"])
    assert done.value.code == 0
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "interop-worker"
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
