"""`$validate-code` over HTTP against the HTTP stack's own ceiling, in one run.

Why beside run.py: run.py's validate_code figure comes after a full ingest and against a
FastAPI baseline (a routed FastAPI endpoint, itself far below what uvicorn can serve). This
runs, on the same machine, same wrk settings, one after the other:

- `asgi_hello`: a raw ASGI app under uvicorn (same settings as `interop serve`) answering a
  fixed Parameters body: what one uvicorn process can serve here at most;
- `baseline`: bench/baseline.py (the FastAPI read baseline of run.py);
- `validate_code`: `interop serve` (1 worker, SQLite, auth off, as run.py) answering
  GET ValueSet/$validate-code on observation-status (a required binding), valid and invalid
  codes, every answer a 200 Parameters.

Usage: python bench/validate_code_bench.py [--duration S] [--connections N] [--rounds R]
Numbers depend on what else the machine runs (wrk shares its cores with the server): compare
the rows of one run, not runs; the server CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

HELLO = """
import sys
import uvicorn
BODY = b'{"resourceType":"Parameters","parameter":[{"name":"result","valueBoolean":true}]}'
HEAD = [(b"content-type", b"application/fhir+json"), (b"content-length", b"%d" % len(BODY))]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEAD})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host=sys.argv[1], port=int(sys.argv[2]), log_config=None, access_log=False,
            server_header=False)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers), from /proc."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measured(wrk: str, server: Any, opts: Any, path_file: str) -> tuple[float, float]:
    """(req/s, server CPU microseconds per request) of one wrk run after a warm-up."""
    run.run_wrk(wrk, server.url, "paths.lua", [path_file], opts.warmup, opts.connections)
    before = cpu_seconds(server.proc.pid)
    raw = run.run_wrk(wrk, server.url, "paths.lua", [path_file], opts.duration, opts.connections)
    used = cpu_seconds(server.proc.pid) - before
    errors = raw["non2xx3xx"] + raw["connect_errors"] + raw["read_errors"] + raw["timeouts"]
    if errors or not raw["requests"]:
        raise run.BenchError(f"{server.name}: {errors} errors, {raw['requests']} requests")
    rate = raw["requests"] / (raw["duration_us"] / 1e6)
    return rate, used / raw["requests"] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="each server measured R times")
    ns = parser.parse_args()
    opts = run.Options(
        backends=["sqlite"], patients=0, observations=0, duration=ns.duration,
        connections=ns.connections, warmup=ns.warmup, ingest_threads=1,
        output=Path(), pg_url="", synthea_patients=0, synthea_only=False,
    )  # fmt: skip
    wrk = run.ensure_wrk()
    paths = [run.VALIDATE_CODE.format(code=c) for c in run.STATUS_CODES]
    rates: dict[str, list[float]] = {"asgi_hello": [], "baseline": [], "validate_code": []}
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    with tempfile.TemporaryDirectory(prefix="validate-code-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "hello.py").write_text(HELLO, encoding="utf-8")
        hello_file = run.write_lines(workdir / "hello.txt", ["/"])
        base_file = run.write_lines(workdir / "base.txt", ["/fhir/Patient/example"])
        code_file = run.write_lines(workdir / "codes.txt", paths)
        for _ in range(ns.rounds):
            port = run.free_port()
            argv = [sys.executable, str(workdir / "hello.py"), run.HOST, str(port)]
            hello = run.start_process("asgi_hello", argv, dict(run.os.environ), port, workdir)
            with run.running(hello, "/"):
                rate, us = measured(wrk, hello, opts, hello_file)
                rates["asgi_hello"].append(rate)
                cpu["asgi_hello"].append(us)
            with run.running(run.baseline_server(workdir), "/fhir/Patient/example") as base:
                rate, us = measured(wrk, base, opts, base_file)
                rates["baseline"].append(rate)
                cpu["baseline"].append(us)
            db = f"sqlite:///{workdir / 'fhir.db'}"
            with run.running(run.fhir_server("fhir", db, workdir), "/readyz") as server:
                status, body = run.get_json(server, paths[0])
                assert status == 200 and body["parameter"][0]["valueBoolean"] is True, body
                rate, us = measured(wrk, server, opts, code_file)
                rates["validate_code"].append(rate)
                cpu["validate_code"].append(us)
    print(f"wrk 1 thread, {ns.connections} connections, {ns.duration} s per figure, "
          f"{ns.rounds} rounds (servers in turn)")  # fmt: skip
    print("  (CPU: the server process's user+system time per request, less noisy than req/s;")
    print("   1e6 / CPU us is what one core could serve if wrk and nothing else ran beside it)")
    for name, values in rates.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        us = min(cpu[name])
        print(
            f"  {name:<14} req/s: {shown}   (best {max(values):,.0f});  server CPU "
            f"{us:,.0f} us/request (best) -> {1e6 / us:,.0f} req/s per core"
        )
    best = {k: max(v) for k, v in rates.items()}
    print(f"  validate_code / asgi_hello: {best['validate_code'] / best['asgi_hello']:.2f}; "
          f"validate_code / baseline: {best['validate_code'] / best['baseline']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
