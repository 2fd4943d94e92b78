"""`interop worker`'s own /metrics (INTEROP_WORKER_METRICS_PORT) is as closed as the API's:
nothing without the operator's bearer token; /healthz tells only that the process is up."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from interop.metrics import serve_worker_metrics
from interop.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def worker_endpoint(**settings: str) -> Iterator[str]:
    port = free_port()
    server = serve_worker_metrics(Settings(host="127.0.0.1", worker_metrics_port=port, **settings))
    assert server is not None
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_closed_by_default() -> None:
    with worker_endpoint() as base:
        answer = httpx.get(f"{base}/metrics")
        assert answer.status_code == 404 and "interop_" not in answer.text
        assert (
            httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer x" * 3}).status_code
            == 404
        )
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.get(f"{base}/").status_code == 404


def test_needs_the_operators_bearer_token(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    (tmp_path / "token").write_text(token + "\n")
    with worker_endpoint(metrics_token_file=str(tmp_path / "token")) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
            refused = httpx.get(f"{base}/metrics", headers=headers)
            assert refused.status_code == 401 and "interop_" not in refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "interop_ai_jobs_finished_total" in scraped.text


def test_off_means_off_and_no_port_means_no_endpoint(tmp_path: Path) -> None:
    with worker_endpoint(metrics="off") as base:
        assert httpx.get(f"{base}/metrics").status_code == 404
    assert serve_worker_metrics(Settings(worker_metrics_port=0)) is None
