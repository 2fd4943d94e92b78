"""MLLP throughput: 10-OBX ORU^R01 from 8 concurrent senders, both ACK modes.

Prints acknowledged messages/s and mapped resources/s next to an echo-server baseline
and python-hl7's parse-only rate. `--quick` keeps runs short on a shared machine;
`--database-url` picks the store (default: a temporary SQLite file).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from hl7_listener.mllp import EB, MllpServer, frame
from hl7_listener.processor import Processor, Reply
from hl7_listener.runner import build_processor
from interop.settings import Settings

SENDERS = 8


def message(sender: int, i: int, tag: str = "") -> bytes:
    obx = "\r".join(
        f"OBX|{k}|NM|{1000 + k}-{k % 10}^Analyte {k}^LN||{k * 1.5}|mg/dL^^UCUM|1-9|N|||F"
        for k in range(1, 11)
    )
    return (
        f"MSH|^~\\&|LAB{sender}|HOSP|EHR|HOSP|20240101120000||ORU^R01|{tag}S{sender}-{i}|P|2.5.1\r"
        f"PID|1||{sender * 100000 + i % 50}^^^HOSP^MR||Doe^Pat||19800101|F\r"
        f"OBR|1|PL{sender}-{i}|FI{sender}-{i}|24323-8^Panel^LN|||20240101110000"
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

    server = MllpServer(proc.handle if proc else echo, port=0)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="25 messages per sender")
    ap.add_argument("--per-sender", type=int, default=250)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    per = 25 if args.quick else args.per_sender
    total = per * SENDERS
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    echo = total / asyncio.run(measure(None, per))
    parse = parse_rate(total)
    print(f"{total} messages, {SENDERS} senders, store {url.split(':')[0]}")
    print(f"echo baseline        {echo:9.0f} msg/s")
    print(f"python-hl7 parse     {parse:9.0f} msg/s")
    for mode in ("map", "store"):
        proc = build_processor(Settings(database_url=url, mllp_ack_mode=mode))
        tag = f"{mode}{time.time_ns()}-"
        secs = asyncio.run(measure(proc, per, tag))
        mapped_started = time.perf_counter()
        proc.process_pending()
        drain = time.perf_counter() - mapped_started
        rows = [r for r in proc.inbox.list(limit=total * 4) if r.control_id.startswith(tag)]
        resources = sum(len(r.resources) for r in rows)
        print(
            f"ack-after-{mode:5s}      {total / secs:9.0f} msg/s acknowledged "
            f"({total / secs / echo:.2%} of echo), "
            f"{resources / (secs + drain):9.0f} resources/s mapped"
        )
        proc.ctx.store.engine.dispose()


if __name__ == "__main__":
    main()
