"""Bulk Data benchmark: $export rate against a raw SELECT of the same JSON, memory while the
export grows, and $import rate through the one write path.

    python bench/bulk_bench.py                      # 1,000,000 Observations, SQLite file
    python bench/bulk_bench.py --count 100000 --import-count 5000
    python bench/bulk_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench_x

The Observations are seeded with plain INSERTs into `resources` (bodies exactly as the write
path stores them; no index rows, which a system export does not read), because seeding a
million through the write path would measure ingest, not export. The export is the real job
function (`fhir_server.bulk.export.run_export`) writing real NDJSON files; the raw figure is
`SELECT body FROM resources WHERE res_type = 'Observation' AND deleted = false` fetched in
batches of 2,000 in the same process, same database, same run. Import reads generated NDJSON
through `fhir_server.bulk.importer.import_lines` (validation, transaction Bundles of 500).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.api.interactions import Context  # noqa: E402
from fhir_server.bulk.config import BulkConfig  # noqa: E402
from fhir_server.bulk.export import BulkEnv, run_export  # noqa: E402
from fhir_server.bulk.importer import import_lines  # noqa: E402
from fhir_server.bulk.jobs import JobStore  # noqa: E402
from fhir_server.bulk.params import ExportRequest  # noqa: E402
from fhir_server.clock import now_us, to_instant  # noqa: E402
from fhir_server.store.db import create_db_engine, upgrade  # noqa: E402
from fhir_server.store.repository import Store  # noqa: E402

BASE = "http://bench.local/fhir"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 1e6


def observation(i: int, stamp: int) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": f"obs-{i}",
            "meta": {"versionId": "1", "lastUpdated": to_instant(stamp)},
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/pat-{i % 1000}"},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {
                "value": 60 + i % 40,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
    )


def seed(store: Store, count: int) -> float:
    started = time.perf_counter()
    batch = 10_000
    marks = ", ".join(["%s" if store.sql.postgres else "?"] * 6)
    sql = (
        "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, body) "
        f"VALUES ({marks})"
    )
    for start in range(0, count, batch):
        stamp = now_us()
        rows = [
            ("Observation", f"obs-{i}", 1, stamp, False, observation(i, stamp))
            for i in range(start, min(start + batch, count))
        ]
        with store.write_connection() as conn:
            cursor = conn.connection.cursor()
            cursor.executemany(sql, rows)
            cursor.close()
    return time.perf_counter() - started


def raw_select(store: Store) -> tuple[int, float]:
    started = time.perf_counter()
    rows = 0
    size = 0
    with store.engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        cursor: Any = (
            dbapi.cursor(name="raw") if store.sql.postgres else dbapi.cursor()  # type: ignore[call-arg]
        )
        mark = "%s" if store.sql.postgres else "?"
        cursor.execute(
            f"SELECT body FROM resources WHERE res_type = {mark} AND deleted = {mark}",
            ("Observation", False),
        )
        while chunk := cursor.fetchmany(2000):
            rows += len(chunk)
            size += sum(len(r[0]) for r in chunk)
        cursor.close()
        conn.rollback()
    return rows, time.perf_counter() - started


def export(store: Store, folder: Path, max_file_mb: int) -> dict[str, Any]:
    config = BulkConfig(directory=folder, max_file_bytes=max_file_mb * 1024 * 1024)
    jobs = JobStore(store, config)
    env = BulkEnv(store, BASE, False)
    request = ExportRequest("system", types=["Observation"])
    job = jobs.create("export", "", f"{BASE}/$export?_type=Observation", request.to_json())
    assert jobs.claim(job.job_id)
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()
    directory = jobs.directory(job.job_id)

    def sample() -> None:
        while not done.wait(0.25):
            written = sum(p.stat().st_size for p in directory.glob("*.ndjson"))
            samples.append((time.perf_counter(), rss_mb(), written))

    rss_before = rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    run_export(jobs, job, env)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    finished = jobs.get(job.job_id)
    assert finished is not None and finished.status == "completed", finished
    manifest = orjson.loads(finished.result or "{}")
    count = sum(o["count"] for o in manifest["output"])
    total_bytes = sum(p.stat().st_size for p in directory.glob("*.ndjson"))
    return {
        "count": count,
        "seconds": seconds,
        "files": len(manifest["output"]),
        "bytes": total_bytes,
        "rss_before_mb": rss_before,
        "samples": samples,
    }


def import_rate(store: Store, count: int, folder: Path) -> tuple[int, int, float]:
    path = folder / "import.ndjson"
    with open(path, "wb") as handle:
        for i in range(count):
            resource = orjson.loads(observation(i, now_us()))
            resource["id"] = f"imp-{i}"
            resource.pop("meta")
            handle.write(orjson.dumps(resource) + b"\n")
    ctx = Context(store, BASE)
    errors: list[Any] = []
    started = time.perf_counter()
    with open(path, "rb") as handle:
        counts = import_lines(ctx.store, str(path), handle, 500, errors.append)
    return counts.loaded, counts.failed, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="Observations to export")
    parser.add_argument("--import-count", type=int, default=20_000, help="resources to import")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--max-file-mb", type=int, default=256, help="export file split size")
    parser.add_argument("--repeat", type=int, default=3, help="raw/export runs, best counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        engine = create_db_engine(url, 4)
        upgrade(engine)
        store = Store(engine, BASE)
        print(
            f"{engine.dialect.name}: seeding {args.count:,} Observations",
            file=sys.stderr,
        )
        seed_s = seed(store, args.count)
        raw_select(store)  # warms the page cache for both readers
        raw_times, runs = [], []
        for run in range(args.repeat):  # interleaved; the best of each counts (shared machine)
            raw_rows, seconds = raw_select(store)
            raw_times.append(seconds)
            runs.append(export(store, folder / f"export-{run}", args.max_file_mb))
            shutil.rmtree(folder / f"export-{run}", ignore_errors=True)
        raw_best = min(raw_times)
        result = min(runs, key=lambda r: r["seconds"])
        result["rss_growth_max"] = max(
            max((s[1] for s in r["samples"]), default=r["rss_before_mb"]) - r["rss_before_mb"]
            for r in runs
        )
        print(f"importing {args.import_count:,} Observations ...", file=sys.stderr)
        loaded, failed, import_s = import_rate(store, args.import_count, folder)
        engine.dispose()
    samples = result["samples"]
    peak = max((s[1] for s in samples), default=result["rss_before_mb"])
    quarters = []
    if samples:
        for q in (0.25, 0.5, 0.75, 1.0):
            s = samples[min(int(len(samples) * q), len(samples) - 1)]
            quarters.append({"written_mb": round(s[2] / 1e6, 1), "rss_mb": round(s[1], 1)})
    export_rate = result["count"] / result["seconds"]
    raw_rate = raw_rows / raw_best
    figures = {
        "database": url.split(":", 1)[0],
        "observations": args.count,
        "seed_seconds": round(seed_s, 1),
        "raw_select_per_s": round(raw_rate),
        "export_per_s": round(export_rate),
        "export_vs_raw": round(export_rate / raw_rate, 3),
        "export_seconds": round(result["seconds"], 2),
        "export_files": result["files"],
        "export_mb": round(result["bytes"] / 1e6, 1),
        "rss_before_export_mb": round(result["rss_before_mb"], 1),
        "rss_peak_during_export_mb": round(peak, 1),
        "rss_growth_mb": round(result["rss_growth_max"], 1),
        "raw_seconds": [round(t, 2) for t in raw_times],
        "export_seconds_all": [round(r["seconds"], 2) for r in runs],
        "rss_by_progress": quarters,
        "import_loaded": loaded,
        "import_failed": failed,
        "import_per_s": round(loaded / import_s),
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    target = "PASS" if figures["export_vs_raw"] >= 0.5 else "MISS"
    print(f"runs (s): raw {figures['raw_seconds']}, export {figures['export_seconds_all']}")
    print(f"raw SELECT of the JSON     {figures['raw_select_per_s']:>12,} resources/s")
    print(
        f"$export into NDJSON        {figures['export_per_s']:>12,} resources/s  "
        f"ratio {figures['export_vs_raw']:.2f} (target >= 0.5: {target})"
    )
    print(
        f"  {result['count']:,} resources, {figures['export_files']} file(s), "
        f"{figures['export_mb']} MB in {figures['export_seconds']} s"
    )
    print(
        f"memory: {figures['rss_before_export_mb']} MB before, peak "
        f"{figures['rss_peak_during_export_mb']} MB (largest growth of any run "
        f"+{figures['rss_growth_mb']} MB); "
        "RSS as the files grow: "
        + ", ".join(f"{q['written_mb']} MB -> {q['rss_mb']} MB" for q in quarters)
    )
    print(
        f"$import (write path)       {figures['import_per_s']:>12,} resources/s  "
        f"({loaded:,} loaded, {failed} failed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
