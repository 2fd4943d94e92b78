"""One-shot load benchmark of the FHIR server against a bare FastAPI baseline.

Why: the targets are relative to what uvicorn+FastAPI can do on this machine at all, so the
baseline and every backend are measured in the same run, with the same wrk settings.
Run from the repository root: `python bench/run.py [--quick] [--backends sqlite,postgresql]`.
Exits 1 only when a measurement had errors (or the server could not run); a target MISS is
reported, not fatal. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BUNDLE_SIZE = 100
READY_TIMEOUT_S = 90.0
BUNDLE_TIMEOUT_S = 120.0

# fmt: off
FAMILIES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
]
GIVENS = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark",
    "Margaret", "Donald", "Sandra", "Steven", "Ashley", "Paul", "Kimberly", "Andrew", "Emily",
    "Joshua", "Donna",
]
# fmt: on
# (LOINC code, display, UCUM unit, low, high)
LOINC = [
    ("8867-4", "Heart rate", "/min", 50, 120),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 90, 180),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 50, 110),
    ("8310-5", "Body temperature", "Cel", 35, 40),
    ("9279-1", "Respiratory rate", "/min", 10, 30),
    ("29463-7", "Body weight", "kg", 3, 150),
    ("8302-2", "Body height", "cm", 45, 200),
    ("39156-5", "Body mass index", "kg/m2", 15, 45),
    ("2708-6", "Oxygen saturation", "%", 85, 100),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 60, 300),
    ("2093-3", "Cholesterol [Mass/volume] in Serum", "mg/dL", 120, 300),
    ("2085-9", "HDL Cholesterol", "mg/dL", 20, 100),
    ("18262-6", "LDL Cholesterol", "mg/dL", 50, 200),
    ("2571-8", "Triglyceride", "mg/dL", 40, 400),
    ("4548-4", "Hemoglobin A1c", "%", 4, 14),
    ("718-7", "Hemoglobin", "g/dL", 8, 18),
    ("6690-2", "Leukocytes", "10*3/uL", 2, 20),
    ("777-3", "Platelets", "10*3/uL", 100, 450),
    ("2160-0", "Creatinine", "mg/dL", 0.4, 3),
    ("2823-3", "Potassium", "mmol/L", 3, 6),
]
TARGETS: dict[str, str] = {
    "ingest": ">= 2000 resources/s",
    "read": ">= 0.7 x baseline req/s",
    "search_observation": ">= 0.4 x baseline req/s, p99 <= 3 x baseline p99",
    "search_patient_name": ">= 0.4 x baseline req/s, p99 <= 3 x baseline p99",
    "crud": ">= 1500 req/s",
    "read_audited": "<= 10% below read_authenticated (the cost of the AuditEvent trail)",
    "synthea_ingest": ">= 1500 resources/s",
    "synthea_ingest_basic_validation": "the same ingest with only resourceType/id/limit checks",
    "validation_cost": "full R4 validation >= 0.8 x basic (synthea_ingest / ..._basic_validation)",
    "validate_code": ">= 5000 req/s (ratio: x baseline)",
}
# $validate-code against a required ValueSet (Observation.status): valid and invalid codes,
# every answer a 200 Parameters (result true or false)
VALIDATE_CODE = (
    "/fhir/ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/observation-status"
    "&system=http://hl7.org/fhir/observation-status&code={code}"
)
STATUS_CODES = ("final", "preliminary", "amended", "bogus", "registered", "cancelled", "xyz")


class BenchError(RuntimeError):
    """A failure that makes the run invalid (server did not start, wrk failed, ...)."""


@dataclass
class Options:
    """Parsed command line."""

    backends: list[str]
    patients: int
    observations: int
    duration: int
    connections: int
    warmup: int
    ingest_threads: int
    output: Path
    pg_url: str
    synthea_patients: int
    synthea_only: bool
    workers: int = 1


@dataclass
class Server:
    """A child process we started and must stop, with its log file for post-mortems."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Dataset:
    """What was loaded, so the wrk path files only use ids and pairs that exist."""

    patient_ids: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    observation_ids: list[str] = field(default_factory=list)
    subject_codes: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """Ask the kernel for an unused port so parallel runs and stale servers do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_process(
    name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path
) -> Server:
    """Start a server in its own session, so stopping it also stops its uvicorn children."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, proc, port, log_path)


def stop_process(server: Server) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


def wait_ready(server: Server, path: str) -> None:
    """Poll until `path` answers 200; fail early if the process died."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.proc.returncode} before it was ready:\n"
                + server.log_tail()
            )
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise BenchError(
        f"{server.name} not ready after {READY_TIMEOUT_S:.0f}s ({last}):\n{server.log_tail()}"
    )


@contextlib.contextmanager
def running(server: Server, ready_path: str) -> Iterator[Server]:
    """Context that always stops the server, also on Ctrl-C and errors."""
    try:
        wait_ready(server, ready_path)
        yield server
    finally:
        stop_process(server)


def fhir_server(
    name: str,
    database_url: str,
    workdir: Path,
    auth: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Server:
    """Start `interop serve` with the settings the brief fixes (1 worker, no auth, warnings);
    `auth` turns authentication on with the given extra settings instead; `workers` API
    processes (uvicorn workers) for the --workers comparison."""
    port = free_port()
    env = {
        **os.environ,
        "INTEROP_AUTH": "off",
        **(auth or {}),
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_SECRET_KEY_FILE": str(workdir / "secret.key"),  # shared with `interop token`
        "INTEROP_PORT": str(port),
        "INTEROP_HOST": HOST,
        "INTEROP_LOG_LEVEL": "warning",
        "INTEROP_WORKERS": str(workers),
        "INTEROP_MLLP_PORT": "0",  # FHIR figures only; bench/hl7_bench.py measures MLLP
        **(extra_env or {}),
    }
    argv = [sys.executable, "-m", "interop.cli", "serve"]
    return start_process(name, argv, env, port, workdir)


def baseline_server(workdir: Path) -> Server:
    """Start bench/baseline.py with the interpreter running this script."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "baseline.py"), "--host", HOST, "--port", str(port)]
    return start_process("baseline", argv, dict(os.environ), port, workdir)


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """Create a throw-away database and always drop it, so runs never see old data."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- data


def make_dataset(opts: Options) -> tuple[Dataset, list[bytes], list[bytes]]:
    """Build all transaction Bundles up front, so ingest time is server time, not client."""
    import orjson

    rng = random.Random(42)
    data = Dataset()
    patient_entries: list[dict[str, Any]] = []
    for i in range(opts.patients):
        pid = f"pt-{i:07d}"
        family = rng.choice(FAMILIES)
        data.patient_ids.append(pid)
        data.families.append(family)
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": "urn:bench:mrn", "value": f"MRN{i:07d}"}],
            "name": [{"use": "official", "family": family, "given": [rng.choice(GIVENS)]}],
            "gender": rng.choice(("male", "female", "other", "unknown")),
            "birthDate": (
                f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            ),
        }
        patient_entries.append(
            {"resource": resource, "request": {"method": "PUT", "url": f"Patient/{pid}"}}
        )
    obs_entries: list[dict[str, Any]] = []
    for i in range(opts.observations):
        oid = f"obs-{i:08d}"
        pid = rng.choice(data.patient_ids)
        code, display, unit, low, high = rng.choice(LOINC)
        data.observation_ids.append(oid)
        data.subject_codes.append((pid, code))
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": oid,
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
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": (
                f"{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
            ),
            "valueQuantity": {
                "value": round(rng.uniform(low, high), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }
        obs_entries.append(
            {"resource": observation, "request": {"method": "PUT", "url": f"Observation/{oid}"}}
        )

    def bundles(entries: list[dict[str, Any]]) -> list[bytes]:
        return [
            orjson.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": entries[i : i + BUNDLE_SIZE],
                }
            )
            for i in range(0, len(entries), BUNDLE_SIZE)
        ]

    return data, bundles(patient_entries), bundles(obs_entries)


def check_transaction(status: int, body: bytes, expected: int) -> str | None:
    """Return why a transaction response is not a full success, or None if it is."""
    import orjson

    if status != 200:
        return f"HTTP {status}: {body[:300]!r}"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP 200 with non-JSON body {body[:200]!r}"
    if doc.get("type") != "transaction-response":
        return f"bundle type {doc.get('type')!r}"
    entries = doc.get("entry") or []
    if len(entries) != expected:
        return f"{len(entries)} response entries for {expected} requests"
    for entry in entries:
        entry_status = str((entry.get("response") or {}).get("status", ""))
        if not entry_status.startswith("2"):
            return f"entry status {entry_status!r}"
    return None


def post_bundles(
    server: Server, bundles: list[bytes], threads: int
) -> tuple[list[float], list[str]]:
    """POST bundles from a few keep-alive connections; return latencies (s) and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(len(bundles)))

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=BUNDLE_TIMEOUT_S)
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                body = bundles[index]
                expected = body.count(b'"request":')
                started = time.perf_counter()
                try:
                    conn.request("POST", "/fhir", body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    status = resp.status
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, server.port, timeout=BUNDLE_TIMEOUT_S)
                    with lock:
                        errors.append(f"bundle {index}: {type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                problem = check_transaction(status, payload, expected)
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(f"bundle {index}: {problem}")
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, threads))]
    for t in pool:
        t.start()
    deadline = time.monotonic() + BUNDLE_TIMEOUT_S * (len(bundles) + 1)
    for t in pool:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in pool):
        errors.append("ingest workers did not finish before the deadline")
    return latencies, errors


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ingest(
    server: Server, opts: Options, patients: list[bytes], obs: list[bytes]
) -> dict[str, Any]:
    """Load Patients then Observations (so references resolve) and time the whole load."""
    started = time.perf_counter()
    lat_p, err_p = post_bundles(server, patients, opts.ingest_threads)
    lat_o, err_o = post_bundles(server, obs, opts.ingest_threads)
    elapsed = time.perf_counter() - started
    latencies = lat_p + lat_o
    resources = opts.patients + opts.observations
    errors = err_p + err_o
    return {
        "resources": resources,
        "bundles": len(patients) + len(obs),
        "duration_s": round(elapsed, 3),
        "rate": round(resources / elapsed, 1) if elapsed else 0.0,
        "unit": "resources/s",
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


@dataclass
class SyntheaLoad:
    """The Synthea-shaped Bundles (bench/synthea.py), serialized once before any server runs."""

    shared: list[bytes]
    patients: list[bytes]
    resources: int  # in the patient Bundles
    conditional_references: int  # in the patient Bundles


def make_synthea(opts: Options) -> SyntheaLoad:
    """Generate the shared and per-patient transaction Bundles from a fixed seed."""
    import orjson
    import synthea

    shared, patients = synthea.generate(seed=42, patients=opts.synthea_patients)
    return SyntheaLoad(
        shared=[orjson.dumps(b) for b in shared],
        patients=[orjson.dumps(b) for b in patients],
        resources=sum(len(b["entry"]) for b in patients),
        conditional_references=sum(len(synthea.conditional_references(b)) for b in patients),
    )


def synthea_ingest(server: Server, opts: Options, load: SyntheaLoad) -> dict[str, Any]:
    """Load the shared Organization/Location/Practitioner Bundles (one at a time, as Synthea's
    files are meant to go first), then time the patient Bundles from the ingest threads."""
    started = time.perf_counter()
    _, shared_errors = post_bundles(server, load.shared, 1)
    shared_s = time.perf_counter() - started
    started = time.perf_counter()
    latencies, errors = post_bundles(server, load.patients, opts.ingest_threads)
    elapsed = time.perf_counter() - started
    errors = shared_errors + errors
    return {
        "resources": load.resources,
        "bundles": len(load.patients),
        "conditional_references": load.conditional_references,
        "shared_bundles_s": round(shared_s, 3),
        "duration_s": round(elapsed, 3),
        "rate": round(load.resources / elapsed, 1) if elapsed else 0.0,
        "unit": "resources/s",
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def check_synthea(server: Server) -> dict[str, Any]:
    """After the load: Encounters exist and their conditional references were resolved."""
    status, doc = get_json(server, "/fhir/Encounter?_count=20")
    entries = (doc.get("entry") or []) if isinstance(doc, dict) else []
    refs = [
        ref
        for e in entries
        for ref in (
            (e["resource"].get("serviceProvider") or {}).get("reference"),
            *((p.get("individual") or {}).get("reference") for p in e["resource"]["participant"]),
        )
    ]
    unresolved = [r for r in refs if not isinstance(r, str) or "?" in r]
    return {"status": status, "encounters": len(entries), "unresolved": unresolved[:3]}


# --------------------------------------------------------------------------- checks


def get_json(server: Server, path: str) -> tuple[int, Any]:
    """One GET through urllib, for sanity checks (not measured)."""
    req = urllib.request.Request(server.url + path, headers={"Accept": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body[:300].decode(errors="replace")


def sample_paths(server: Server, paths: list[str], searchset: bool) -> dict[str, Any]:
    """Hit a few paths before measuring: wrong data makes a fast but meaningless figure."""
    statuses: dict[str, int] = {}
    hits: list[int] = []
    bad: list[str] = []
    started = time.perf_counter()
    for path in paths[:20]:
        status, doc = get_json(server, path)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status != 200:
            bad.append(f"GET {path} -> {status}: {str(doc)[:300]}")
        elif searchset and isinstance(doc, dict):
            hits.append(len(doc.get("entry") or []))
    elapsed_ms = (time.perf_counter() - started) * 1000 / max(1, min(20, len(paths)))
    result: dict[str, Any] = {
        "statuses": statuses,
        "failures": bad[:3],
        "sequential_mean_ms": round(elapsed_ms, 2),
    }
    if searchset:
        result["mean_entries"] = round(sum(hits) / len(hits), 1) if hits else 0.0
        result["empty_results"] = sum(1 for h in hits if h == 0)
    return result


# --------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """Find wrk, or apt-get install it when running as root; fail clearly otherwise."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False, timeout=600)
            subprocess.run(install, env=env, check=False, timeout=600)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("wrk is not installed: apt-get install -y wrk")


def run_wrk(
    wrk: str, url: str, script: str, args: list[str], duration: int, connections: int
) -> dict[str, Any]:
    """Run wrk with 1 thread and parse the JSON line our Lua done() hook prints."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH_DIR / script),
        url,
    ]
    if args:
        argv += ["--", *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return result
    raise BenchError(f"wrk gave no result (rc {done.returncode}):\n{done.stdout}\n{done.stderr}")


def measure(
    wrk: str,
    server: Server,
    opts: Options,
    script: str,
    args: list[str],
) -> dict[str, Any]:
    """Warm up, then measure; turn wrk's counters into the figures we report."""
    warm = run_wrk(wrk, server.url, script, args, opts.warmup, opts.connections)
    raw = run_wrk(wrk, server.url, script, args, opts.duration, opts.connections)
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
    errors = raw["non2xx3xx"] + socket_errors + raw["timeouts"]
    if script == "crud.lua":
        bad = sum(raw[f"bad_{op}"] for op in ("post", "get", "put", "delete"))
        errors = max(errors, bad + raw["untagged"] + socket_errors + raw["timeouts"])
    if raw["requests"] == 0:  # nothing finished in time: wrk reports no error for that
        errors += 1
    warm_errors = warm["non2xx3xx"] + warm["connect_errors"] + warm["read_errors"]
    warm_errors += warm["write_errors"] + warm["timeouts"]
    return {
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "rate": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "unit": "req/s",
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "warmup_errors": warm_errors,
        "wrk": raw,
    }


def write_lines(path: Path, lines: list[str]) -> str:
    """Write a path list for paths.lua; return the file name as wrk's script argument."""
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# --------------------------------------------------------------------------- verdicts


def verdict(
    name: str, figure: dict[str, Any], baseline_rate: float, baseline_p99: float = 0.0
) -> tuple[str, float | None]:
    """PASS/MISS against TARGETS (issue 13's); INVALID when the figure had any error.
    `baseline_p99`: the p99 of the baseline measurement whose rate is used."""
    ratio = figure["rate"] / baseline_rate if baseline_rate and name in RATIO_OF_BASELINE else None
    if figure.get("errors"):
        return "INVALID", ratio
    ok: bool
    if name == "ingest":
        ok = figure["rate"] >= 2000
    elif name == "read":
        ok = ratio is not None and ratio >= 0.7
    elif name in ("search_observation", "search_patient_name"):
        p99_ok = bool(baseline_p99) and figure["p99_ms"] <= 3 * baseline_p99
        ok = ratio is not None and ratio >= 0.4 and p99_ok
    elif name == "crud":
        ok = figure["rate"] >= 1500
    elif name == "read_audited":
        ok = figure.get("audit_cost", 1.0) <= 0.10
    elif name == "synthea_ingest":
        ok = figure["rate"] >= 1500
    elif name == "validation_cost":
        ok = figure["rate"] >= 0.8
    elif name == "validate_code":
        ok = figure["rate"] >= 5000
    else:
        return "-", ratio
    return ("PASS" if ok else "MISS"), ratio


RATIO_OF_BASELINE = ("read", "search_observation", "search_patient_name", "validate_code")
# Tokens name the FHIR base they are for; the audit-cost servers all claim this one.
AUTH_BASE = f"http://{HOST}:8080/fhir"


def print_table(results: dict[str, Any]) -> None:
    """Print one row per figure, with target and verdict."""
    header = (
        f"{'backend':<11} {'measurement':<20} {'rate':>10} {'unit':<12} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'x base':>7} {'errors':>6}  {'verdict':<7} target"
    )
    print()
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for key in ("baseline", "baseline_end"):
        if key in results:
            rows.append(("-", key, results[key]))
    for backend, figures in results.get("backends", {}).items():
        for name, figure in figures.get("figures", {}).items():
            rows.append((backend, name, figure))
    for backend, name, figure in rows:
        ratio = figure.get("ratio_to_baseline")
        ratio_text = f"{ratio:.2f}" if isinstance(ratio, float) else ""
        print(
            f"{backend:<11} {name:<20} {figure['rate']:>10.1f} {figure['unit']:<12} "
            f"{figure.get('p50_ms', 0.0):>8.2f} {figure.get('p99_ms', 0.0):>8.2f} {ratio_text:>7} "
            f"{figure['errors']:>6}  {figure.get('verdict', '-'):<7} {TARGETS.get(name, '')}"
        )
    for backend, figures in results.get("backends", {}).items():
        audited = figures.get("figures", {}).get("read_audited", {})
        if "audit_cost" in audited:
            print(f"{backend}: the AuditEvent trail costs reads {audited['audit_cost']:.0%}")
        if "audit_search" in audited:
            found = audited["audit_search"]
            print(
                f"{backend}: then one AuditEvent search found {found['read_events']} read "
                f"events ({found['measured_reads']} measured reads + warm-up) in "
                f"{found['first_search_s']} s"
            )
        if figures.get("failure"):
            print(f"{backend}: FAILED: {figures['failure'][:500]}")
    print(
        f"ratios use the better baseline: {results.get('baseline_rate_used', 0):.1f} req/s, "
        f"its p99 {results.get('baseline_p99_used', 0):.2f} ms"
    )
    print()


# --------------------------------------------------------------------------- main flow


def bench_backend(
    backend: str,
    database_url: str,
    opts: Options,
    wrk: str,
    workdir: Path,
    built: tuple[Dataset, list[bytes], list[bytes]],
    synthea_load: SyntheaLoad,
) -> dict[str, Any]:
    """Start the server on a fresh database, ingest, then run the wrk measurements."""
    data, patient_bundles, obs_bundles = built
    out: dict[str, Any] = {"database": database_url.split("@")[-1], "figures": {}, "checks": {}}
    figures: dict[str, dict[str, Any]] = out["figures"]
    server = fhir_server(f"server-{backend}", database_url, workdir)
    if opts.synthea_only:
        with running(server, "/readyz"):
            run_synthea(backend, server, opts, synthea_load, out)
        validation_cost(backend, database_url, opts, workdir, synthea_load, out)
        return out
    with running(server, "/readyz"):
        print(
            f"[{backend}] ingesting {opts.patients} patients + {opts.observations} observations",
            flush=True,
        )
        figures["ingest"] = ingest(server, opts, patient_bundles, obs_bundles)
        print(f"[{backend}] ingest: {figures['ingest']['rate']} resources/s", flush=True)

        plans = read_search_plans(data)
        reads = plans[0][1]
        plans.append(("validate_code", [VALIDATE_CODE.format(code=c) for c in STATUS_CODES], False))
        for name, paths, searchset in plans:
            out["checks"][name] = sample_paths(server, paths, searchset)
            path_file = write_lines(workdir / f"{backend}-{name}.txt", paths)
            print(f"[{backend}] {name} ({len(paths)} distinct paths)", flush=True)
            figures[name] = measure(wrk, server, opts, "paths.lua", [path_file])
        print(f"[{backend}] crud", flush=True)
        figures["crud"] = measure(wrk, server, opts, "crud.lua", ["/fhir"])
        crud_raw = figures["crud"]["wrk"]
        figures["crud"]["ops"] = {
            op: crud_raw[f"ok_{op}"] for op in ("post", "get", "put", "delete")
        }
        run_synthea(backend, server, opts, synthea_load, out)
        if server.proc.poll() is not None:
            raise BenchError(f"server exited during the run:\n{server.log_tail()}")
    out["server_log_tail"] = server.log_tail(2000)
    validation_cost(backend, database_url, opts, workdir, synthea_load, out)
    read_file = write_lines(workdir / f"{backend}-read.txt", reads)
    figures.update(audit_cost(backend, database_url, opts, wrk, workdir, read_file))
    return out


def read_search_plans(data: Dataset) -> list[tuple[str, list[str], bool]]:
    """The read and search path lists (fixed seed), shared by every measurement of them."""
    rng = random.Random(7)
    reads = [
        f"/fhir/Observation/{oid}"
        for oid in rng.sample(data.observation_ids, min(20000, len(data.observation_ids)))
    ]
    pairs = rng.sample(data.subject_codes, min(20000, len(data.subject_codes)))
    obs_search = [
        f"/fhir/Observation?subject=Patient/{pid}&code=http://loinc.org%7C{code}"
        for pid, code in pairs
    ]
    prefixes = sorted({family[:3] for family in data.families})
    name_search = [f"/fhir/Patient?name={prefix}" for prefix in prefixes]
    return [
        ("read", reads, False),
        ("search_observation", obs_search, True),
        ("search_patient_name", name_search, True),
    ]


def bench_workers(
    backend: str,
    database_url: str,
    opts: Options,
    wrk: str,
    workdir: Path,
    built: tuple[Dataset, list[bytes], list[bytes]],
) -> dict[str, Any]:
    """Read and search throughput with `opts.workers` API processes against one, on the same
    database in the same run (one process is the baseline: the ratio is what adding API
    processes buys on this machine)."""
    data, patient_bundles, obs_bundles = built
    out: dict[str, Any] = {"database": database_url.split("@")[-1], "figures": {}, "ratios": {}}
    plans = read_search_plans(data)
    for count in (1, opts.workers):
        server = fhir_server(f"server-{backend}-{count}w", database_url, workdir, workers=count)
        with running(server, "/readyz"):
            if count == 1:
                print(f"[{backend}] ingesting for the --workers comparison", flush=True)
                ingest(server, opts, patient_bundles, obs_bundles)
            for name, paths, _ in plans:
                path_file = write_lines(workdir / f"{backend}-{name}-{count}.txt", paths)
                print(f"[{backend}] {name} with {count} API process(es)", flush=True)
                figure = measure(wrk, server, opts, "paths.lua", [path_file])
                figure["verdict"] = "-"
                out["figures"][f"{name}_{count}w"] = figure
    for name, _, _ in plans:
        one = out["figures"][f"{name}_1w"]["rate"]
        many = out["figures"][f"{name}_{opts.workers}w"]["rate"]
        out["ratios"][name] = round(many / one, 3) if one else 0.0
    return out


def run_synthea(
    backend: str, server: Server, opts: Options, load: SyntheaLoad, out: dict[str, Any]
) -> None:
    """The Synthea-shaped ingest figure and its sanity check, into `out`."""
    print(
        f"[{backend}] synthea ingest: {len(load.patients)} patient Bundles, {load.resources} "
        f"resources, {load.conditional_references} conditional references",
        flush=True,
    )
    out["figures"]["synthea_ingest"] = figure = synthea_ingest(server, opts, load)
    out["checks"]["synthea_ingest"] = check = check_synthea(server)
    if check["status"] != 200 or not check["encounters"] or check["unresolved"]:
        figure["errors"] += 1
        figure["error_samples"].append(f"sanity check failed: {json.dumps(check)}")
    print(f"[{backend}] synthea ingest: {figure['rate']} resources/s", flush=True)


@contextlib.contextmanager
def second_database(backend: str, opts: Options, workdir: Path) -> Iterator[str]:
    """A fresh database beside the backend's own (same engine), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    with postgres_database(opts.pg_url) as url:
        yield url


def validation_cost(
    backend: str,
    database_url: str,
    opts: Options,
    workdir: Path,
    load: SyntheaLoad,
    out: dict[str, Any],
) -> None:
    """The Synthea ingest again on a fresh database with `INTEROP_VALIDATION=basic` (only the
    resourceType, id and request-limit checks): the ratio is what full R4 validation costs.
    `basic` checks less than the old R4B-model validation did, so the ratio is conservative."""
    full = out["figures"].get("synthea_ingest")
    if not full or not full.get("rate"):
        return
    with second_database(backend, opts, workdir) as url:
        server = fhir_server(f"server-{backend}-basic", url, workdir,
                             extra_env={"INTEROP_VALIDATION": "basic"})  # fmt: skip
        with running(server, "/readyz"):
            print(f"[{backend}] synthea ingest, basic validation only", flush=True)
            basic = synthea_ingest(server, opts, load)
    out["figures"]["synthea_ingest_basic_validation"] = basic
    ratio = full["rate"] / basic["rate"] if basic["rate"] else 0.0
    out["figures"]["validation_cost"] = {
        "rate": round(ratio, 3),
        "unit": "x (full / basic)",
        "errors": basic["errors"],
        "full_rate": full["rate"],
        "basic_rate": basic["rate"],
    }
    print(f"[{backend}] synthea ingest: full R4 validation {full['rate']} resources/s, basic "
          f"{basic['rate']} resources/s: {ratio:.2f}x", flush=True)  # fmt: skip


def audit_cost(
    backend: str, database_url: str, opts: Options, wrk: str, workdir: Path, read_file: str
) -> dict[str, dict[str, Any]]:
    """Reads with a bearer token, without and with the AuditEvent trail: what auditing costs
    (each measured twice, A B B A, the better run of each compared).

    The token comes from `interop token` for a client registered with `interop clients add`,
    as an operator's script would get one; both servers share the database and its keys.
    """
    env = {
        **os.environ,
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_BASE_URL": AUTH_BASE,
        "INTEROP_SECRET_KEY_FILE": str(workdir / "secret.key"),
    }
    cli = [sys.executable, "-m", "interop.cli"]
    added = subprocess.run(
        [*cli, "clients", "add", "--name", "bench", "--type", "confidential-secret"]
        + ["--scope", "system/*.rs", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=workdir,
    )
    client_id = json.loads(added.stdout)["client_id"]
    token = subprocess.run(
        [*cli, "token", "--client", client_id, "--scope", "system/*.rs"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=workdir,
    ).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"read_authenticated": [], "read_audited": []}
    search: dict[str, Any] = {}
    # twice each, in the order A B B A, each on a fresh server: one measurement of each
    # compared the machine's moments as much as the trail (2-core shared runs: +-20 points)
    for name in ("read_authenticated", "read_audited", "read_audited", "read_authenticated"):
        audit = "true" if name == "read_audited" else "false"
        settings = {
            "INTEROP_AUTH": "on",
            "INTEROP_AUTH_AUDIT": audit,
            "INTEROP_BASE_URL": AUTH_BASE,
        }
        run = len(runs[name]) + 1
        server = fhir_server(f"server-{backend}-{name}-{run}", database_url, workdir, settings)
        with running(server, "/readyz"):
            print(f"[{backend}] {name} ({run} of 2)", flush=True)
            runs[name].append(measure(wrk, server, opts, "paths.lua", [read_file, token]))
            if audit == "true" and not search:
                search = audit_search(server, token)
                search["measured_reads"] = runs[name][-1]["requests"]
    figures: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():  # the better run counts; an error in either shows
        figures[name] = {
            **max(measured, key=lambda m: float(m["rate"])),
            "runs": [m["rate"] for m in measured],
            "errors": sum(m["errors"] for m in measured),
        }
    figures["read_audited"]["audit_search"] = search
    plain, audited = figures["read_authenticated"]["rate"], figures["read_audited"]["rate"]
    figures["read_audited"]["audit_cost"] = round(1 - audited / plain, 3) if plain else 1.0
    return figures


def audit_search(server: Server, token: str) -> dict[str, Any]:
    """After the audited reads: one AuditEvent search, which must find them (read events
    are kept compact and expanded into AuditEvents on the first request that can see them);
    how long that first search took and how many read events it counted."""
    req = urllib.request.Request(
        server.url + "/fhir/AuditEvent?subtype=read&_summary=count",
        headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {token}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        total = json.loads(resp.read()).get("total", 0)
    return {"read_events": total, "first_search_s": round(time.perf_counter() - started, 2)}


def validate_code_in_process(seconds: float = 3.0) -> dict[str, Any]:
    """`$validate-code` answers produced by the operation itself (parameters in, Parameters
    bytes out) on one thread, without HTTP: what the terminology service can serve, apart
    from the web stack every figure above shares with `baseline`."""
    from fhir_server import fhirjson
    from fhir_server.terminology import Terminology
    from fhir_server.terminology import operations as ops

    svc = Terminology()
    queries = []
    for code in STATUS_CODES:
        params = ops.Params()
        params.add("url", "http://hl7.org/fhir/ValueSet/observation-status")
        params.add("system", "http://hl7.org/fhir/observation-status")
        params.add("code", code)
        queries.append(params)
    fhirjson.dumps(ops.validate_code(svc, queries[0]))  # loads and expands once
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for params in queries:
            fhirjson.dumps(ops.validate_code(svc, params))
        done += len(queries)
    elapsed = time.perf_counter() - start
    return {"requests": done, "seconds": round(elapsed, 2), "rate": round(done / elapsed, 1)}


def measure_baseline(wrk: str, opts: Options, workdir: Path, when: str) -> dict[str, Any]:
    """Start bench/baseline.py, measure it like every endpoint, stop it."""
    base = baseline_server(workdir)
    with running(base, "/fhir/Patient/example"):
        path_file = write_lines(workdir / "baseline.txt", ["/fhir/Patient/example"])
        print(f"[baseline] measuring ({when})", flush=True)
        figure = measure(wrk, base, opts, "paths.lua", [path_file])
    figure["verdict"] = "-"
    return figure


def parse_args(argv: list[str] | None) -> Options:
    """Command line -> Options; --quick overrides sizes and durations for a smoke run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma list: sqlite,postgresql"
    )
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per endpoint")
    parser.add_argument(
        "--ingest-threads", type=int, default=4, help="client threads posting bundles"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 observations, 100 patients, 3 s"
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument(
        "--synthea-patients",
        type=int,
        default=40,
        help="patient Bundles (~460 resources, ~450 conditional references each) for the "
        "synthea_ingest figure",
    )
    parser.add_argument(
        "--synthea-only",
        action="store_true",
        help="measure only synthea_ingest (no baseline, no wrk figures)",
    )
    parser.add_argument(
        "--pg-url", default=PG_ADMIN_URL, help="admin URL used to create/drop the database"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="compare read and search throughput with this many API processes against one "
        "(only that comparison is run)",
    )
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.patients, ns.observations, ns.duration = 100, 2000, 3
        ns.synthea_patients = min(ns.synthea_patients, 8)
    backends = [b.strip() for b in ns.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if min(ns.patients, ns.observations, ns.duration, ns.connections, ns.synthea_patients) < 1:
        parser.error("sizes, duration and connections must be positive")
    return Options(
        backends=backends,
        patients=ns.patients,
        observations=ns.observations,
        duration=ns.duration,
        connections=ns.connections,
        warmup=max(0, ns.warmup),
        ingest_threads=ns.ingest_threads,
        output=ns.output,
        pg_url=ns.pg_url,
        synthea_patients=ns.synthea_patients,
        synthea_only=ns.synthea_only,
        workers=max(1, ns.workers),
    )


def environment(wrk: str) -> dict[str, Any]:
    """Record what the figures depend on, so results.json files can be compared."""
    import uvicorn

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
    extras = {name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")}
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "uvloop_installed": extras["uvloop"],
        "httptools_installed": extras["httptools"],
        "wrk": wrk_version.splitlines()[0] if wrk_version else "",
    }


def main_workers(opts: Options, wrk: str) -> int:
    """`--workers N`: read and search with N API processes against one, per backend."""
    results: dict[str, Any] = {"environment": environment(wrk), "workers": opts.workers,
                               "backends": {}}  # fmt: skip
    failed = False
    with tempfile.TemporaryDirectory(prefix="fhir-bench-") as tmp:
        workdir = Path(tmp)
        built = make_dataset(opts)
        for backend in opts.backends:
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'bench.db'}"
                out = bench_workers(backend, url, opts, wrk, workdir, built)
            else:
                with postgres_database(opts.pg_url) as url:
                    out = bench_workers(backend, url, opts, wrk, workdir, built)
            results["backends"][backend] = out
            failed = failed or any(f.get("errors") for f in out["figures"].values())
    print()
    print(f"{'backend':<11} {'measurement':<22} {'1 process':>11} {f'{opts.workers} processes':>13}"
          f" {'ratio':>6}   (req/s, same run; {os.cpu_count()} cores)")  # fmt: skip
    for backend, out in results["backends"].items():
        for name, ratio in out["ratios"].items():
            one = out["figures"][f"{name}_1w"]["rate"]
            many = out["figures"][f"{name}_{opts.workers}w"]["rate"]
            print(f"{backend:<11} {name:<22} {one:>11.1f} {many:>13.1f} {ratio:>6.2f}")
    output = opts.output.with_name(f"workers_{opts.output.name}")
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    return 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt so the `finally` blocks stop servers and drop the DB."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run baseline and backends; return 1 if any figure had errors or a backend failed."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    wrk = ensure_wrk()
    if opts.workers > 1:
        return main_workers(opts, wrk)
    results: dict[str, Any] = {
        "environment": environment(wrk),
        "settings": {
            "patients": opts.patients,
            "observations": opts.observations,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "connections": opts.connections,
            "wrk_threads": 1,
            "server_workers": 1,
            "bundle_size": BUNDLE_SIZE,
            "ingest_threads": opts.ingest_threads,
            "synthea_patients": opts.synthea_patients,
            "synthea_only": opts.synthea_only,
        },
        "targets": TARGETS,
        "backends": {},
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="fhir-bench-") as tmp:
        workdir = Path(tmp)
        print("building the data set", flush=True)
        built = (Dataset(), [], []) if opts.synthea_only else make_dataset(opts)
        synthea_load = make_synthea(opts)
        if not opts.synthea_only:
            results["baseline"] = measure_baseline(wrk, opts, workdir, "start")
            failed = bool(results["baseline"]["errors"])
        for backend in opts.backends:
            try:
                if backend == "sqlite":
                    url = f"sqlite:///{workdir / 'bench.db'}"
                    results["backends"][backend] = bench_backend(
                        backend, url, opts, wrk, workdir, built, synthea_load
                    )
                else:
                    with postgres_database(opts.pg_url) as url:
                        results["backends"][backend] = bench_backend(
                            backend, url, opts, wrk, workdir, built, synthea_load
                        )
            except Exception as exc:  # a broken backend must not hide the other's figures
                failed = True
                said = getattr(exc, "stderr", None) or ""  # what a failed command printed
                print(
                    f"[{backend}] FAILED: {type(exc).__name__}: {exc} {said[-2000:]}",
                    file=sys.stderr,
                    flush=True,
                )
                results["backends"][backend] = {"failure": f"{exc}", "figures": {}}
            figures = results["backends"][backend].get("figures", {})
            failed = failed or any(f.get("errors") for f in figures.values())
        if not opts.synthea_only:
            results["baseline_end"] = measure_baseline(wrk, opts, workdir, "end")
            failed = failed or bool(results["baseline_end"]["errors"])
    # The machine is shared: the better of the two baselines is the conservative reference.
    better = max(
        (results.get(k, {}) for k in ("baseline", "baseline_end")),
        key=lambda b: b.get("rate", 0.0),
    )
    baseline_rate, baseline_p99 = better.get("rate", 0.0), better.get("p99_ms", 0.0)
    results["baseline_rate_used"] = baseline_rate
    results["baseline_p99_used"] = baseline_p99
    for info in results["backends"].values():
        for name, figure in info.get("figures", {}).items():
            figure["verdict"], ratio = verdict(name, figure, baseline_rate, baseline_p99)
            if ratio is not None:
                figure["ratio_to_baseline"] = round(ratio, 3)
    print_table(results)
    if not opts.synthea_only:
        results["validate_code_in_process"] = service = validate_code_in_process()
        print(f"validate_code without HTTP (the terminology service, one thread): "
              f"{service['rate']} req/s (target >= 5000)")  # fmt: skip
    for backend, info in results["backends"].items():
        for name, check in info.get("checks", {}).items():
            if check.get("failures") or check.get("empty_results"):
                print(f"[{backend}] {name} sanity check: {json.dumps(check)}")
        crud = info.get("figures", {}).get("crud")
        if crud:
            print(f"[{backend}] crud completed operations: {json.dumps(crud['ops'])}")
    opts.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {opts.output}")
    if failed:
        print("INVALID: some measurements had errors (see 'errors' above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
