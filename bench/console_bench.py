"""The console's HL7 message search with a million messages in the inbox.

Fills `hl7_messages` in bulk with SQL (generate_series on PostgreSQL, a recursive CTE on
SQLite; the full-text triggers of migration 0014 index every row as the inbox would), then
times `console.messages.search` (one page of 50, what the message browser asks for) for each
kind of filter, with random values, and prints p50/p99 per kind against the target
(p99 < 200 ms). Baseline, measured in the same run on the same table: the cheapest page the
database can give (the newest 50 messages by primary key); each kind's p99 is also printed
as a ratio to it.

    .venv/bin/python bench/console_bench.py --backend postgresql --messages 1000000
    .venv/bin/python bench/console_bench.py --backend sqlite --messages 1000000
    .venv/bin/python bench/console_bench.py --quick        # 50,000 messages, both backends
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.messages import MessageQuery, search  # noqa: E402
from interop.runtime import Runtime  # noqa: E402
from interop.settings import Settings  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 200.0
DAY_US = 86_400_000_000
FAMILIES = 5_000  # distinct family names: each in ~1/5000 of the messages
PATIENTS = 200_000  # distinct MRNs
RARE = 100_000  # "rare" words: each in ~10 messages of a million
SENDERS = 20
TYPES = ("ADT^A01", "ADT^A08", "ORU^R01", "ORM^O01")


def fill(engine, n: int, now_us: int) -> float:  # type: ignore[no-untyped-def]
    """Insert n messages in batches; returns the seconds it took."""
    started = time.perf_counter()
    batch = 100_000
    postgres = engine.dialect.name == "postgresql"
    for first in range(1, n + 1, batch):
        last = min(n, first + batch - 1)
        # i: the message number; every column derived from it, so the data is reproducible
        columns = {
            "sender": "'LAB' || (i % {s}) || '^HOSP'",
            "type": "CASE (i / 7) % 4 WHEN 0 THEN 'ADT^A01' WHEN 1 THEN 'ADT^A08' "
            "WHEN 2 THEN 'ORU^R01' ELSE 'ORM^O01' END",
            "raw_text": "'MSH|^~\\&|LAB' || (i % {s}) || '|HOSP|INTEROP|HOSP|20260131080000||'"
            " || (CASE (i / 7) % 4 WHEN 0 THEN 'ADT^A01' WHEN 1 THEN 'ADT^A08'"
            " WHEN 2 THEN 'ORU^R01' ELSE 'ORM^O01' END) || '|C' || i || '|P|2.5.1' || char(13)"
            " || 'PID|1||MRN' || (i % {p}) || '^^^HOSP^MR||Fam' || (i % {f})"
            " || '^Given||19700101|F'"
            " || char(13) || 'OBX|1|NM|2345-7^Glucose^LN||' || (i % 97) || '|mmol/L|||N|||F'"
            " || char(13) || 'NTE|1||note rare' || (i % {r}) || ' common text'",
        }
        fmt = {"s": SENDERS, "p": PATIENTS, "f": FAMILIES, "r": RARE}
        sender, mtype, raw = (columns[k].format(**fmt) for k in ("sender", "type", "raw_text"))
        status = "CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'processed' END"
        received = f"{now_us} - (({n} - i) * {30 * DAY_US // n})"
        patient = f"' MRN' || (i % {PATIENTS}) || ' '"
        if postgres:
            raw = raw.replace("char(13)", "chr(13)")
            source = f"generate_series({first}::bigint, {last}::bigint) AS g(i)"
            raw_value = f"convert_to({raw}, 'UTF8')"
        else:
            source = (f"(WITH RECURSIVE g(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM g "
                      f"WHERE i < {last}) SELECT i FROM g)")  # fmt: skip
            raw_value = f"CAST({raw} AS BLOB)"
        sql = (
            "INSERT INTO hl7_messages (raw, sender, control_id, message_type, version, "
            "received_at, status, error, patient_ids) "
            f"SELECT {raw_value}, {sender}, 'C' || i, {mtype}, '2.5.1', {received}, {status}, "
            f"CASE WHEN i % 50 = 0 THEN 'mapping failed' END, {patient} FROM {source}"
        )
        with engine.begin() as conn:
            if postgres:  # a bulk load, not a request: no statement time limit
                conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text(sql))
        print(f"  {last:,} messages ({time.perf_counter() - started:.0f} s)", flush=True)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def kinds(n: int, now_us: int) -> dict[str, Callable[[random.Random], MessageQuery]]:
    def day(rng: random.Random) -> int:
        return now_us - rng.randrange(1, 29) * DAY_US

    return {
        "newest page (baseline)": lambda r: MessageQuery(),
        "text: rare word (~10 hits)": lambda r: MessageQuery(text=f"rare{r.randrange(RARE)}"),
        "text: family name (~200 hits)": lambda r: MessageQuery(text=f"fam{r.randrange(FAMILIES)}"),
        "text: word in every message": lambda r: MessageQuery(text="glucose"),
        "text: common word + failed": lambda r: MessageQuery(text="common", status="failed"),
        "text: no match": lambda r: MessageQuery(text=f"absent{r.randrange(1000)}"),
        "text: two words + sender": lambda r: MessageQuery(
            text=f"glucose fam{r.randrange(FAMILIES)}", sender=f"LAB{r.randrange(SENDERS)}^HOSP"),
        "patient identifier": lambda r: MessageQuery(patient=f"MRN{r.randrange(PATIENTS)}"),
        "control id": lambda r: MessageQuery(control_id=f"C{r.randrange(1, n)}"),
        "sender + type": lambda r: MessageQuery(
            sender=f"LAB{r.randrange(SENDERS)}^HOSP", message_type=r.choice(TYPES)),
        "type family (ADT)": lambda r: MessageQuery(message_type="ADT"),
        "status failed": lambda r: MessageQuery(status="failed"),
        "one day": lambda r: (lambda d: MessageQuery(since=d, until=d + DAY_US))(day(r)),
        "failed, one day": lambda r: (lambda d: MessageQuery(since=d, until=d + DAY_US,
                                                             status="failed"))(day(r)),
        "page 2 of a common word": lambda r: MessageQuery(text="common", before=n - 50),
    }  # fmt: skip


def measure(engine, n: int, rounds: int, seed: int = 7) -> list[tuple[str, float, float, int]]:  # type: ignore[no-untyped-def]
    now_us = int(time.time() * 1_000_000)
    rng = random.Random(seed)
    out = []
    for name, make in kinds(n, now_us).items():
        for _ in range(3):  # warm the caches
            search(engine, make(rng), 50)
        times, found = [], 0
        for _ in range(rounds):
            q = make(rng)
            started = time.perf_counter()
            rows = search(engine, q, 50)
            times.append((time.perf_counter() - started) * 1000)
            found += len(rows)
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        out.append((name, statistics.median(times), p99, found // rounds))
    return out


def run(backend: str, n: int, rounds: int) -> bool:
    tmp = tempfile.TemporaryDirectory()
    admin = None
    if backend == "postgresql":
        name = f"bench_console_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{tmp.name}/console.db"
    try:
        runtime = Runtime(Settings(database_url=url, auth="off"), migrate=True, pool_size=2)
        engine = runtime.engine
        print(f"{backend}: filling the inbox with {n:,} messages", flush=True)
        took = fill(engine, n, int(time.time() * 1_000_000))
        print(f"{backend}: filled in {took:.0f} s ({n / took:,.0f} messages/s)")
        results = measure(engine, n, rounds)
        baseline = results[0][2]
        print(f"\n{backend}, {n:,} messages, {rounds} searches per kind, one page of 50:")
        print(f"{'kind':<34}{'p50 ms':>9}{'p99 ms':>9}{'x baseline p99':>16}{'rows':>6}  verdict")
        ok = True
        for name, p50, p99, rows in results:
            verdict = "PASS" if p99 < TARGET_MS else "MISS"
            ok = ok and verdict == "PASS"
            print(f"{name:<34}{p50:>9.1f}{p99:>9.1f}{p99 / baseline:>16.1f}{rows:>6}  {verdict}")
        worst = max(r[2] for r in results)
        print(f"{backend}: worst p99 {worst:.1f} ms (target < {TARGET_MS:.0f} ms): "
              f"{'PASS' if ok else 'MISS'}\n")  # fmt: skip
        runtime.close()
        return ok
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        tmp.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100, help="searches per kind")
    parser.add_argument("--quick", action="store_true", help="50,000 messages, 30 rounds")
    args = parser.parse_args()
    n, rounds = (50_000, 30) if args.quick else (args.messages, args.rounds)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [run(b, n, rounds) for b in backends]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
