"""Imaging: STOW-RS -> searchable latency, backfill vs Orthanc's QIDO-RS, proxy WADO-RS vs direct.

Starts its own Orthanc (DICOMweb plugin, temporary storage, loopback, a user) and its own
`interop serve` (auth off, Orthanc's change feed followed every 0.1 s), then prints:

- `stow_proxy`: seconds from `POST /dicomweb/studies` through this server until the
  ImagingStudy is found by FHIR search (the proxy syncs before answering), p50/p99;
- `stow_feed`: the same for a STOW-RS straight into Orthanc, found through the change feed;
  reported as measured and as measured minus Orthanc's StableAge ("after stable", target
  p50 < 2 s);
- `backfill`: `interop imaging backfill`'s rate (studies/s) for N generated studies of
  3 series against Orthanc's own QIDO-RS rate (one study query per study, same studies)
  and its WADO-RS metadata rate (what a sync reads per study);
- `wado`: MB/s of WADO-RS retrieval of a whole multi-frame study through the proxy against
  the same retrieval from Orthanc directly (target ratio >= 0.8).

Usage: python bench/imaging_bench.py [--studies 1000] [--quick] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomweb_bridge.multipart import encode  # noqa: E402
from dicomweb_bridge.samples import StudySpec, study, to_bytes  # noqa: E402

USER, PASSWORD = "bench", "bench-secret"
STABLE_AGE = 1
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, auth: Any = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, auth=auth, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def orthanc(folder: Path) -> Iterator[str]:
    port = free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"), "Plugins": [PLUGIN], "HttpPort": port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD}, "DicomServerEnabled": False,
        "StableAge": STABLE_AGE, "SaveJobs": False, "OverwriteInstances": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }  # fmt: skip
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc",
                             str(folder / "orthanc.json")], stdout=log, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/system", (USER, PASSWORD))
        yield url
    finally:
        stop(proc)
        log.close()


@contextmanager
def interop(folder: Path, orthanc_url: str, database_url: str) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, INTEROP_DATABASE_URL=database_url, INTEROP_PORT=str(port),
               INTEROP_AUTH="off", INTEROP_MLLP_PORT="0", INTEROP_LOG_LEVEL="warning",
               INTEROP_ORTHANC_URL=orthanc_url, INTEROP_ORTHANC_USER=USER,
               INTEROP_ORTHANC_PASSWORD=PASSWORD, INTEROP_IMAGING_POLL_SECONDS="0.1",
               INTEROP_IMAGING_RECONCILE_SECONDS="0")  # fmt: skip
    log = (folder / "interop.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "interop.cli", "serve"], cwd=ROOT, env=env,
                            stdout=log, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz")
        yield url
    finally:
        stop(proc)
        log.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def stow_body(spec: StudySpec) -> tuple[str, str, bytes]:
    import io

    datasets = study(spec)
    content_type, chunks = encode([io.BytesIO(to_bytes(ds)) for ds in datasets])
    return str(datasets[0].StudyInstanceUID), content_type, b"".join(chunks)


def searchable(http: httpx.Client, api: str, uid: str) -> bool:
    resp = http.get(
        f"{api}/fhir/ImagingStudy",
        params={"identifier": f"urn:dicom:uid|urn:oid:{uid}", "_summary": "count"},
    )
    return resp.json().get("total", 0) == 1


def latency(http: httpx.Client, api: str, target: str, n: int, auth: Any) -> list[float]:
    out = []
    for i in range(n):
        uid, content_type, body = stow_body(StudySpec(patient_id=f"LAT-{target}-{i}"))
        started = time.perf_counter()
        resp = http.post(f"{target}/studies", content=body, auth=auth,
                         headers={"Content-Type": content_type})  # fmt: skip
        resp.raise_for_status()
        while not searchable(http, api, uid):
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"study {uid} never became searchable")
            time.sleep(0.02)
        out.append(time.perf_counter() - started)
    return out


def load_studies(http: httpx.Client, dicomweb: str, n: int) -> list[str]:
    uids = []
    for i in range(n):
        uid, content_type, body = stow_body(StudySpec(
            patient_id=f"BF-{i % 200}", series=(("CT", 1), ("CT", 1), ("MR", 1))))  # fmt: skip
        http.post(f"{dicomweb}/studies", content=body, auth=(USER, PASSWORD),
                  headers={"Content-Type": content_type}).raise_for_status()  # fmt: skip
        uids.append(uid)
    return uids


def qido_rate(http: httpx.Client, dicomweb: str, uids: list[str], metadata: bool) -> float:
    started = time.perf_counter()
    for uid in uids:
        url = f"{dicomweb}/studies/{uid}/metadata" if metadata else f"{dicomweb}/studies"
        params = {} if metadata else {"StudyInstanceUID": uid}
        http.get(url, params=params, auth=(USER, PASSWORD)).raise_for_status()
    return len(uids) / (time.perf_counter() - started)


def wado_rate(http: httpx.Client, url: str, auth: Any, repeat: int) -> float:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    headers = {"Accept": accept, "Accept-Encoding": "identity"}  # pixels, not gzip speed
    total, started = 0, time.perf_counter()
    for _ in range(repeat):
        with http.stream("GET", url, auth=auth, headers=headers) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_raw(1 << 20):
                total += len(chunk)
    return total / (time.perf_counter() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1000, help="studies for the backfill")
    parser.add_argument("--latency-samples", type=int, default=30)
    parser.add_argument("--wado-instances", type=int, default=20, help="instances of 5 MB")
    parser.add_argument("--wado-repeat", type=int, default=5)
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    parser.add_argument(
        "--backfill-database-url",
        default="",
        help="empty database for the backfill; default: a new SQLite file",
    )
    parser.add_argument("--quick", action="store_true", help="100 studies, 10 samples")
    opts = parser.parse_args()
    if opts.quick:
        opts.studies, opts.latency_samples, opts.wado_instances, opts.wado_repeat = 100, 10, 8, 3
    if not (shutil.which("Orthanc") and os.path.exists(PLUGIN)):
        print("Orthanc with its DICOMweb plugin is needed: apt-get install orthanc "
              "orthanc-dicomweb", file=sys.stderr)  # fmt: skip
        return 1
    folder = Path(tempfile.mkdtemp(prefix="imaging-bench-"))
    database = opts.database_url or f"sqlite:///{folder / 'interop.db'}"
    results: dict[str, Any] = {}
    try:
        with orthanc(folder) as pacs, interop(folder, pacs, database) as api, \
                httpx.Client(timeout=120) as http:  # fmt: skip
            dicomweb = f"{pacs}/dicom-web"
            proxied = latency(http, api, f"{api}/dicomweb", opts.latency_samples, None)
            feed = latency(http, api, dicomweb, opts.latency_samples, (USER, PASSWORD))
            results["stow_proxy"] = {"p50_s": pct(proxied, 50), "p99_s": pct(proxied, 99)}
            results["stow_feed"] = {
                "p50_s": pct(feed, 50), "p99_s": pct(feed, 99), "stable_age_s": STABLE_AGE,
                "p50_after_stable_s": pct(feed, 50) - STABLE_AGE,
                "p99_after_stable_s": pct(feed, 99) - STABLE_AGE,
            }  # fmt: skip
            print(f"loading {opts.studies} studies of 3 series into Orthanc...", file=sys.stderr)
            uids = load_studies(http, dicomweb, opts.studies)
            # a database of its own, so the backfill creates every study (serve's feed has
            # already synced them into the other one)
            fresh = opts.backfill_database_url or f"sqlite:///{folder / 'backfill.db'}"
            env = dict(os.environ, INTEROP_DATABASE_URL=fresh, INTEROP_ORTHANC_URL=pacs,
                       INTEROP_ORTHANC_USER=USER, INTEROP_ORTHANC_PASSWORD=PASSWORD)  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "interop.cli", "imaging", "backfill",
                                   "--json"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, check=True)  # fmt: skip
            seconds = time.perf_counter() - started
            summary = json.loads(done.stdout)
            total = summary["studies"]
            results["backfill"] = {
                "studies": total, "outcomes": summary["outcomes"],
                "studies_per_s": total / summary["seconds"],
                "studies_per_s_with_startup": total / seconds,
                "orthanc_qido_studies_per_s": qido_rate(http, dicomweb, uids, False),
                "orthanc_metadata_studies_per_s": qido_rate(http, dicomweb, uids, True),
            }  # fmt: skip
            big = StudySpec(patient_id="WADO-1", series=(("CT", opts.wado_instances),),
                            frames=10, size=512)  # fmt: skip
            uid, content_type, body = stow_body(big)
            http.post(f"{api}/dicomweb/studies", content=body,
                      headers={"Content-Type": content_type}).raise_for_status()  # fmt: skip
            direct = wado_rate(http, f"{dicomweb}/studies/{uid}", (USER, PASSWORD), 1)
            via = wado_rate(http, f"{api}/dicomweb/studies/{uid}", None, 1)  # warm both
            direct = wado_rate(http, f"{dicomweb}/studies/{uid}", (USER, PASSWORD),
                               opts.wado_repeat)  # fmt: skip
            via = wado_rate(http, f"{api}/dicomweb/studies/{uid}", None, opts.wado_repeat)
            results["wado"] = {"study_mb": len(body) / 1e6, "direct_mb_s": direct,
                               "proxy_mb_s": via, "ratio": via / direct}  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))
    feed_ok = results["stow_feed"]["p50_after_stable_s"] < 2
    wado_ok = results["wado"]["ratio"] >= 0.8
    print(
        f"stow->searchable via proxy p50 {results['stow_proxy']['p50_s']:.3f} s, "
        f"p99 {results['stow_proxy']['p99_s']:.3f} s"
    )
    print(
        f"stow->searchable via feed  p50 {results['stow_feed']['p50_s']:.3f} s "
        f"({results['stow_feed']['p50_after_stable_s']:.3f} s after stable: "
        f"{'PASS' if feed_ok else 'MISS'} < 2 s), p99 {results['stow_feed']['p99_s']:.3f} s"
    )
    bf = results["backfill"]
    print(
        f"backfill {bf['studies_per_s']:.1f} studies/s vs Orthanc QIDO-RS "
        f"{bf['orthanc_qido_studies_per_s']:.1f} studies/s, metadata "
        f"{bf['orthanc_metadata_studies_per_s']:.1f} studies/s"
    )
    w = results["wado"]
    print(
        f"WADO-RS {w['study_mb']:.0f} MB study: proxy {w['proxy_mb_s']:.0f} MB/s vs direct "
        f"{w['direct_mb_s']:.0f} MB/s = {w['ratio']:.2f} ({'PASS' if wado_ok else 'MISS'} "
        ">= 0.8)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
