"""docker-compose.yml, read as Docker Compose reads it (no Docker engine here): the whole stack,
health checks, shared volumes, secrets from files, pinned images."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci_support import unavailable

from interop.cli import main
from interop.settings import Settings
from smart_auth.sealing import load_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    return list(service.get("command") or [])


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each volume or bind mount."""
    out = {}
    for spec in service.get("volumes") or []:
        source, target = spec.split(":")[:2]
        out[target] = source
    return out


def healthcheck(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return " ".join(test) if isinstance(test, list) else str(test)


def servers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(compose).items() if command(s)[:2] == ["interop", "serve"]}


def interop_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(compose).items() if command(s)[:1] == ["interop"]}


def test_the_whole_stack_is_there(compose: dict[str, Any]) -> None:
    names = set(services(compose))
    assert {"postgres", "redis", "orthanc", "proxy", "worker"} <= names
    assert len(servers(compose)) >= 2  # two API replicas
    assert command(services(compose)["worker"])[:2] == ["interop", "worker"]
    for service in interop_services(compose).values():  # every command is one the CLI knows
        with pytest.raises(SystemExit) as done:
            main([*command(service)[1:], "--help"])
        assert done.value.code == 0


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        _, _, tag = image.rpartition(":")
        assert tag and "/" not in tag and tag != "latest", (name, image)
        assert re.search(r"\d+\.\d+", tag), (name, image)  # a version, not a moving name
    dockerfile = (ROOT / "Dockerfile").read_text()
    for base in re.findall(r"^FROM\s+(\S+)", dockerfile, re.M):
        assert re.search(r":\d+\.\d+\.\d+", base), base


def test_health_checks(compose: dict[str, Any]) -> None:
    every = services(compose)
    assert "pg_isready" in healthcheck(every["postgres"])
    assert "redis-cli ping" in healthcheck(every["redis"])
    for name in servers(compose):
        assert "/readyz" in healthcheck(every[name])
    assert "/healthz" in healthcheck(every["worker"])
    assert every["worker"]["environment"]["INTEROP_WORKER_METRICS_PORT"] in healthcheck(
        every["worker"]
    )
    orthanc_check = healthcheck(every["orthanc"])
    script = orthanc_check.split()[-1]  # a script in the mounted config folder
    folder, source = next(
        (t, s) for t, s in mounts(every["orthanc"]).items() if script.startswith(t + "/")
    )
    assert "GET /system" in (ROOT / source / script[len(folder) + 1 :]).read_text()
    assert "/proxy-health" in healthcheck(every["proxy"])
    # nothing waits on a service that has no health check to wait for
    for name, service in every.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition["condition"] == "service_healthy":
                assert healthcheck(every[dependency]), (name, dependency)


def test_bulk_files_are_shared_by_who_writes_and_who_serves(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    writers_and_servers = {**servers(compose), "worker": services(compose)["worker"]}
    sources = set()
    for name, service in writers_and_servers.items():
        folder = env(service)["INTEROP_BULK_DIR"]
        source = mounts(service).get(folder)
        assert source in named, (name, folder)  # a named volume on the bulk folder
        sources.add(source)
    assert len(sources) == 1  # the same one everywhere
    for service in services(compose).values():  # every named mount is declared
        for source in mounts(service).values():
            assert source.startswith(".") or source in named, source


def test_secrets_come_from_files(compose: dict[str, Any]) -> None:
    fields = Settings.model_fields
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|_URL$")
    for name, service in services(compose).items():
        targets = mounts(service)
        for variable, value in env(service).items():
            if variable.endswith("_FILE"):  # read from a file mounted in that container
                assert any(value.startswith(t + "/") for t in targets), (name, variable)
                if variable.startswith("INTEROP_"):
                    setting = variable.removeprefix("INTEROP_").lower()
                    assert setting in fields or setting.removesuffix("_file") in fields, variable
                continue
            if secretish.search(variable) and variable.startswith(("INTEROP_", "POSTGRES_")):
                assert "@" not in value and "PASSWORD" not in variable, (name, variable, value)
                assert "SECRET" not in variable and "TOKEN" not in variable, (name, variable)
    api = next(iter(servers(compose).values()))
    for needed in ("DATABASE_URL", "REDIS_URL", "ORTHANC_PASSWORD", "ORTHANC_CALLBACK_TOKEN"):
        assert f"INTEROP_{needed}_FILE" in env(api)
    assert "secret-key" not in json.dumps(compose).lower()  # no key inlined anywhere
    script = (ROOT / "deploy" / "secrets-init.sh").read_text()
    for variable, value in env(api).items():  # every secret file is made by the init script
        if variable.endswith("_FILE") and value.startswith("/run/secrets/interop/"):
            assert value.rsplit("/", 1)[1] in script, variable


def test_orthanc_has_dicomweb_and_the_deletion_callback(compose: dict[str, Any]) -> None:
    orthanc = services(compose)["orthanc"]
    targets = mounts(orthanc)
    config = json.loads((ROOT / targets["/etc/orthanc-interop"] / "orthanc.json").read_text())
    assert config["DicomWeb"]["Enable"] is True
    assert config["AuthenticationEnabled"] is True
    (lua,) = config["LuaScripts"]
    assert (ROOT / targets[lua]).resolve() == ROOT / "dicomweb_bridge/orthanc/on_deleted.lua"
    assert "OnDeletedStudy" in (ROOT / targets[lua]).read_text()
    callback = env(orthanc)["INTEROP_CALLBACK_URL"]
    assert callback.endswith("/imaging/orthanc/deleted")
    api = env(next(iter(servers(compose).values())))
    assert api["INTEROP_DICOMWEB_URL"].endswith(config["DicomWeb"]["Root"].rstrip("/"))
    assert api["INTEROP_ORTHANC_URL"].endswith(f":{config['HttpPort']}")


def test_the_proxy_spreads_http_and_mllp_over_the_replicas(compose: dict[str, Any]) -> None:
    proxy = services(compose)["proxy"]
    conf = (ROOT / mounts(proxy)["/etc/nginx/nginx.conf"]).read_text()
    http, _, stream = conf.partition("stream {")
    for name, service in servers(compose).items():
        assert f"server {name}:{env(service)['INTEROP_PORT']}" in http
        assert f"server {name}:{env(service)['INTEROP_MLLP_PORT']}" in stream
    published = {p.split(":")[-1] for p in proxy["ports"]}
    assert {"8080", "2575"} <= published
    for service in servers(compose).values():
        assert "ports" not in service  # replicas are reached through the proxy only


def test_the_secrets_service_makes_usable_secrets_once(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        reason = "the script gives the files to the containers' users (chown): run as root"
        unavailable(reason)
    script = ROOT / "deploy" / "secrets-init.sh"
    env = {"SECRETS_DIR": str(tmp_path), "PATH": os.environ["PATH"]}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
    files = {p.name: p for p in tmp_path.iterdir()}
    assert {"database_url", "redis_url", "secret_key", "orthanc_password"} <= set(files)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o400, path.name
    password = files["postgres_password"].read_text()
    assert len(password) >= 32 and f":{password}@postgres:" in files["database_url"].read_text()
    assert len(load_key(str(files["secret_key"]))) == 32  # what INTEROP_SECRET_KEY_FILE needs
    assert files["secret_key"].stat().st_uid == 10001 == files["database_url"].stat().st_uid
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
    assert files["postgres_password"].read_text() == password  # kept: the database has it
