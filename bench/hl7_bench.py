"""MLLP throughput: 10-OBX ORU^R01 from 8 concurrent senders, both ACK modes, against the
REST transaction ingest of the very resources those messages map to, in the same run.

Prints acknowledged messages/s and mapped resources/s next to an echo-server baseline,
python-hl7's parse-only rate and the REST rate (the same mapped Bundles POSTed to /fhir by
8 keep-alive HTTP clients), with the targets: ack-after-map resources/s >= 0.7 x REST, and
ack-after-store >= 2,000 messages/s. `--quick` keeps runs short on a shared machine;
`--database-url` picks the store (default: a temporary SQLite file), `--postgres` a
throw-away database on the local PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from fhir_server import fhirjson
from hl7_listener.mllp import EB, MllpServer, frame
from hl7_listener.processor import Processor, Reply
from interop.runtime import Runtime
from interop.settings import Settings
from mappers.hl7v2 import parse, to_bundle

SENDERS = 8
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def message(sender: int, i: int, tag: str = "") -> bytes:
    obx = "\r".join(
        f"OBX|{k}|NM|{1000 + k}-{k % 10}^Analyte {k}^LN||{k * 1.5}|mg/dL^^UCUM|1-9|N|||F"
        for k in range(1, 11)
    )
    return (
        f"MSH|^~\\&|LAB{sender}|HOSP|EHR|HOSP|20240101120000||ORU^R01|{tag}S{sender}-{i}|P|2.5.1\r"
        f"PID|1||{sender * 100000 + i % 50}^^^HOSP^MR||Doe^Pat||19800101|F\r"
        f"OBR|1|PL{tag}{sender}-{i}|FI{tag}{sender}-{i}|24323-8^Panel^LN|||20240101110000"
        f"||||||||||||||||||F\r{obx}\r"
    ).encode()


async def drive(port: int, per_sender: int, tag: str) -> float:
    async def one(sender: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(per_sender):
            writer.write(frame(message(sender, i, tag)))
            await writer.drain()
            await reader.readuntil(EB + b"\r")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(SENDERS)))
    return time.perf_counter() - started


async def measure(proc: Processor | None, per_sender: int, tag: str = "") -> float:
    def echo(raw: bytes, peer: str) -> Reply:
        return Reply(b"MSH|^~\\&|||||||ACK|1|P|2.5.1\rMSA|AA|1\r", None)

    server = MllpServer(
        proc.handle if proc else echo, port=0, max_connections=SENDERS * 2,
        batch_handler=proc.handle_many if proc else None,
    )  # fmt: skip
    port = await server.start()
    try:
        return await drive(port, per_sender, tag)
    finally:
        await server.stop()


def parse_rate(n: int) -> float:
    import hl7

    msgs = [message(0, i).decode() for i in range(n)]
    started = time.perf_counter()
    for m in msgs:
        hl7.parse(m)
    return n / (time.perf_counter() - started)


def rest_rate(url: str, per_sender: int, tag: str) -> tuple[float, int]:
    """(resources/s, resources): the Bundles the messages map to, POSTed as transactions."""
    import uvicorn

    from interop.app import create_app

    app = create_app(Settings(database_url=url, auth="off", auth_audit=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    bodies = [
        [fhirjson.dumps(to_bundle(parse(message(s, i, tag)))) for i in range(per_sender)]
        for s in range(SENDERS)
    ]
    resources = sum(len(orjson.loads(b)["entry"]) for bs in bodies for b in bs)
    errors: list[str] = []

    def post_all(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body in mine:
            conn.request("POST", "/fhir", body, {"Content-Type": "application/fhir+json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                errors.append(data[:200].decode("utf-8", "replace"))
        conn.close()

    post_all([fhirjson.dumps(to_bundle(parse(message(s, 0, f"warm{tag}")))) for s in range(2)])
    threads = [threading.Thread(target=post_all, args=(bs,)) for bs in bodies]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - started
    server.should_exit = True
    thread.join(30)
    app.state.store.engine.dispose()
    if errors:
        raise SystemExit(f"REST ingest failed: {errors[0]}")
    return resources / secs, resources


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"hl7bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_per_message(started: float, total: int) -> str:
    """CPU time of this process (server and the 8 senders) per message: steadier than
    rates on a shared machine, where other processes take the cores."""
    return f"{(time.process_time() - started) / total * 1e6:5.0f} us CPU/msg"


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(url: str, per: int) -> None:
    total = per * SENDERS
    asyncio.run(measure(None, 2))  # warm-up
    cpu = time.process_time()
    echo = total / asyncio.run(measure(None, per))
    echo_cpu = cpu_per_message(cpu, total)
    parse_ps = parse_rate(total)
    print(f"{total} messages, {SENDERS} senders, store {url.split(':')[0]}, "
          f"{os.cpu_count()} cores, {load()}")  # fmt: skip
    print(f"echo baseline        {echo:9.0f} msg/s ({echo_cpu})")
    print(f"python-hl7 parse     {parse_ps:9.0f} msg/s")
    Runtime(Settings(database_url=url)).close()  # migrate before timing anything
    rest, _ = rest_rate(url, per, f"rest{time.time_ns()}-")
    print(f"REST transactions    {rest:9.0f} resources/s (the mapped Bundles, POST /fhir)")
    for mode in ("map", "store"):
        proc = Runtime(Settings(database_url=url, mllp_ack_mode=mode)).hl7_processor()
        asyncio.run(measure(proc, 2, f"warm{mode}{time.time_ns()}-"))
        proc.process_pending()
        tag = f"{mode}{time.time_ns()}-"
        cpu = time.process_time()
        secs = asyncio.run(measure(proc, per, tag))
        acked_cpu = cpu_per_message(cpu, total)
        mapped_started = time.perf_counter()
        proc.process_pending()
        drain = time.perf_counter() - mapped_started
        rows = [r for r in proc.inbox.list(limit=total * 4) if r.control_id.startswith(tag)]
        resources = sum(len(r.resources) for r in rows)
        mapped = resources / (secs + drain)
        line = (
            f"ack-after-{mode:5s}      {total / secs:9.0f} msg/s acknowledged "
            f"({total / secs / echo:.2%} of echo; {acked_cpu}), "
            f"{mapped:9.0f} resources/s mapped"
        )
        if mode == "map":
            ok = "met" if mapped >= 0.7 * rest else "MISSED"
            line += f" = {mapped / rest:.2f} x REST (target >= 0.70: {ok})"
        else:
            line += f" (target >= 2000 msg/s: {'met' if total / secs >= 2000 else 'MISSED'})"
        print(line)
        proc.close()
        proc.ctx.store.engine.dispose()
    print(f"at the end: {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="25 messages per sender")
    ap.add_argument("--per-sender", type=int, default=250)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--postgres", action="store_true", help="a throw-away local PostgreSQL db")
    args = ap.parse_args()
    per = 25 if args.quick else args.per_sender
    if args.postgres:
        with postgres_database() as url:
            run(url, per)
    else:
        run(args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db", per)


if __name__ == "__main__":
    main()
