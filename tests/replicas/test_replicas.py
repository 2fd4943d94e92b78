"""Running it as a hospital does: replicas and workers on one PostgreSQL, started together,
traffic spread over them, a replica and the worker SIGKILLed mid-load and nothing restarted.

Real processes (`interop serve`, `interop worker`), a real Orthanc (its change feed is a
singleton; its studies trigger AI jobs), a rest-hook receiver on 127.0.0.1. What a hospital
would notice is checked: every HL7 message acknowledged (the sender resends to another
replica), nothing mapped twice, every matching change notified (none twice before the kill),
every AI job finished once; and on SQLite, two uvicorn workers send each notification once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from ci_support import IN_CI
from dicomweb_client import DICOMwebClient
from imaging_support import PASSWORD, USER, Orthanc, running_orthanc
from sqlalchemy import create_engine, text
from store_support import own_database
from topology import (
    Process,
    Receiver,
    Replica,
    eventually,
    observation,
    oru,
    put,
    search_all,
    secret_key,
    send_hl7,
    subscription,
    wait_ready,
)

from ai_worker.phantom import make_phantom, write_series

REDIS_URL = os.environ.get("INTEROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MESSAGES, REST_WRITES, PATIENTS = 120, 60, 15
STUDIES_BEFORE, STUDIES_AFTER = 2, 1


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available; set CI=true to make this a failure")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with own_database("postgresql", prefix="interop_replicas") as url:
        yield url


@pytest.fixture
def orthanc() -> Iterator[Orthanc]:
    """A fresh Orthanc per deployment: its change feed starts empty, so a deployment sees
    only the studies of its own test."""
    with running_orthanc() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


def environment(
    database_url: str, folder: Path, orthanc: Orthanc | None = None, **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "INTEROP_DATABASE_URL": database_url,
        "INTEROP_AUTH": "off",
        "INTEROP_SECRET_KEY_FILE": str(secret_key(folder)),
        "INTEROP_BULK_DIR": str(folder / "bulk"),
        "INTEROP_AI_CACHE_DIR": str(folder / "ai-cache"),
        "INTEROP_OUTBOUND_ALLOW_SUBSCRIPTIONS": "127.0.0.1",  # the test's receiver
        "INTEROP_LOG_FORMAT": "text",
        "INTEROP_LOG_LEVEL": os.environ.get("INTEROP_TEST_LOG_LEVEL", "warning"),
        "INTEROP_DB_POOL_SIZE": "4",
        # short leases: a dead process's work moves within seconds
        "INTEROP_LEASE_SECONDS": "3",
        "INTEROP_AI_LEASE_SECONDS": "3",
        "INTEROP_AI_RETRY_BACKOFF": "0.2",
        "INTEROP_SUBSCRIPTION_RETRY_SECONDS": "0.5",
        "INTEROP_SUBSCRIPTION_MAX_BACKOFF_SECONDS": "2",
    }
    if orthanc is not None:
        env |= {
            "INTEROP_ORTHANC_URL": orthanc.url,
            "INTEROP_ORTHANC_USER": USER,
            "INTEROP_ORTHANC_PASSWORD": PASSWORD,
            "INTEROP_IMAGING_RECONCILE_SECONDS": "0",
            "INTEROP_AI_RULES": '[{"model": "ct-classical", "modality": "CT"}]',
        }
    return env | extra


def stow(orthanc: Orthanc, patient: str) -> str:
    """A small CT phantom study into Orthanc (as a modality would); its StudyInstanceUID."""
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    datasets = write_series(make_phantom(slices=3, size=24), "uncompressed", patient_id=patient)
    DICOMwebClient(orthanc.dicomweb, session=session).store_instances(datasets)
    return str(datasets[0].StudyInstanceUID)


def lease_holders(database_url: str) -> dict[str, str]:
    """lease name -> the pid part of its live holder (process ids are host:pid:random)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT name, owner FROM leases WHERE owner IS NOT NULL AND until > :now"),
                {"now": time.time_ns() // 1000},
            ).all()
    finally:
        engine.dispose()
    return {name: owner.split(":")[1] for name, owner in rows}


def group_of(pid: str) -> int | None:
    """The process group of a lease holder: the `interop` process started by the test (a
    Celery worker's leases are held by its pool processes, in the worker's group)."""
    try:
        return os.getpgid(int(pid))
    except (ProcessLookupError, ValueError):
        return None


def run_deployment(
    database_url: str,
    folder: Path,
    orthanc: Orthanc,
    receiver: Receiver,
    env: dict[str, str],
    workers: list[list[str]],
) -> dict[str, Any]:
    """Three replicas and the workers started at once; traffic; SIGKILL of one replica and
    the first worker mid-load; then what the hospital sees, returned for the assertions."""
    replicas = [Replica(f"replica{i}", env, folder) for i in range(3)]
    procs = [Process(f"worker{i}", args, env, folder) for i, args in enumerate(workers)]
    everyone: list[Process] = [*replicas, *procs]
    try:
        wait_ready(replicas)
        assert all(p.alive() for p in procs), [p.tail() for p in procs]
        live = list(replicas)
        first = live[0]
        assert (
            httpx.put(
                f"{first.url}/fhir/Subscription/hba1c", json=subscription(receiver.url)
            ).status_code
            == 201
        )
        eventually(
            lambda: httpx.get(f"{first.url}/fhir/Subscription/hba1c").json()["status"] == "active",
            30,
            "the Subscription's handshake",
        )
        # the singletons run once across the deployment
        holders = eventually(
            lambda: (h := lease_holders(database_url)) and "singleton:imaging-sync" in h and h,
            30,
            "the imaging follower's leader",
        )
        leaders = [
            name
            for r in replicas
            for name, h in r.health()["services"].items()
            if h.get("leader") is True and name == "imaging-sync"
        ]
        assert len(leaders) <= 1
        acks: list[str] = []
        statuses: list[int] = []
        failovers: list[str] = []
        studies: list[str] = []
        killed: dict[str, Any] = {}
        sent = threading.Semaphore(0)

        def hl7_sender(k: int) -> None:
            for i in range(k, MESSAGES, 4):
                raw = oru(f"C{i}", f"MRN{i % PATIENTS}", f"ORD{i}", 5.0 + i / 100)
                acks.append(send_hl7(lambda: live, raw, i, failovers))
                sent.release()

        def rest_sender(k: int) -> None:
            for i in range(k, REST_WRITES, 2):
                statuses.append(
                    put(
                        lambda: live,
                        f"Observation/rest{i}",
                        observation(f"rest{i}", 6.0 + i / 100),
                        i,
                        failovers,
                    )
                )
                time.sleep(0.05)

        threads = [threading.Thread(target=hl7_sender, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=rest_sender, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for n in range(STUDIES_BEFORE):
            studies.append(stow(orthanc, f"PHANTOM{n}"))
        for _ in range(MESSAGES // 2):
            sent.acquire()
        # mid-load: SIGKILL the replica leading the most (the Subscription consumer first),
        # and the worker draining the Subscription consumer (else the first); nothing is
        # restarted
        holders = lease_holders(database_url)
        by_group = {name: group_of(pid) for name, pid in holders.items()}
        target = next((r for r in replicas if r.pid == by_group.get("outbox:subscriptions")), None)
        if target is None:
            counts = {r: sum(1 for g in by_group.values() if g == r.pid) for r in replicas}
            target = max(replicas, key=lambda r: counts[r])
        worker = next((p for p in procs if p.pid == by_group.get("outbox:subscriptions")), procs[0])
        killed["at"] = time.monotonic()
        killed["leases"] = sorted(n for n, g in by_group.items() if g == target.pid)
        killed["worker_leases"] = sorted(n for n, g in by_group.items() if g == worker.pid)
        for victim in [target, worker]:  # with Celery, the other worker lives on
            victim.kill()
        live[:] = [r for r in replicas if r is not target]
        killed["replica"] = target.name
        for n in range(STUDIES_AFTER):
            studies.append(stow(orthanc, f"PHANTOM{STUDIES_BEFORE + n}"))
        for t in threads:
            t.join(180)
        survivor = live[0]
        killed["traffic_done"] = time.monotonic() - killed["at"]
        return {
            "replicas": replicas,
            "everyone": everyone,
            "live": live,
            "survivor": survivor,
            "acks": acks,
            "statuses": statuses,
            "failovers": failovers,
            "studies": studies,
            "killed": killed,
            "holders_before": holders,
        }
    except BaseException:
        for p in everyone:
            p.stop()
        raise


def check(database_url: str, receiver: Receiver, run: dict[str, Any]) -> dict[str, Any]:
    """Wait for the survivors to converge, then check what a hospital would notice."""
    survivor: Replica = run["survivor"]
    base = survivor.url
    engine = create_engine(database_url)
    try:
        assert run["acks"].count("AA") == MESSAGES, run["acks"]  # every message acknowledged
        assert len(run["statuses"]) == REST_WRITES and all(s in (200, 201) for s in run["statuses"])

        def unmapped() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        text("SELECT count(*) FROM hl7_messages WHERE status = 'received'")
                    ).scalar_one()
                )

        eventually(lambda: unmapped() == 0, 90, "every stored HL7 message mapped")
        observations = search_all(base, "Observation?code=http://loinc.org|4548-4&_count=500")
        expected = {
            (o["id"], str(v))
            for o in observations
            for v in range(1, int(o["meta"]["versionId"]) + 1)
        }
        try:
            eventually(lambda: expected <= set(receiver.counts()), 90, "every notification")
            notified_after_kill = time.monotonic() - run["killed"]["at"]
        except AssertionError:
            with engine.connect() as conn:
                queued = conn.execute(text("SELECT * FROM subscription_queue LIMIT 5")).all()
                done = conn.execute(
                    text("SELECT consumer, count(*) FROM outbox_done GROUP BY consumer")
                ).all()
            missing = sorted(expected - set(receiver.counts()))
            raise AssertionError(
                f"{len(missing)} of {len(expected)} not notified "
                f"({missing[:5]}); queue {queued}; done {done}; "
                f"leases {lease_holders(database_url)}"
            ) from None

        def ai_done() -> bool:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status FROM ai_jobs")).scalars().all()
            return len(rows) == len(run["studies"]) and all(s == "done" for s in rows)

        try:
            eventually(ai_done, 90, "every AI job finished")
        except AssertionError:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT * FROM ai_jobs")).all()
            studies = search_all(base, "ImagingStudy?_count=100")
            raise AssertionError(
                f"AI jobs {found}; {len(studies)} ImagingStudy of "
                f"{len(run['studies'])}; leases {lease_holders(database_url)}; "
                f"{survivor.health()}"
            ) from None
        time.sleep(2)  # anything late or doubled would arrive now
        with engine.connect() as conn:
            jobs = conn.execute(
                text("SELECT study_id, status, attempts, report_id FROM ai_jobs")
            ).all()
            hl7 = conn.execute(
                text("SELECT control_id, status FROM hl7_messages ORDER BY pk")
            ).all()
        # nothing mapped twice: one Patient per MRN, one Observation per order, each at v1
        patients = search_all(base, "Patient?_count=500")
        mrns = [
            i["value"]
            for p in patients
            for i in p.get("identifier", [])
            if i["value"].startswith("MRN")
        ]
        assert sorted(mrns) == sorted(f"MRN{i}" for i in range(PATIENTS)), mrns
        hl7_obs = [o for o in observations if not o["id"].startswith("rest")]
        assert len(hl7_obs) == MESSAGES
        assert {o["meta"]["versionId"] for o in hl7_obs} == {"1"}
        processed = {c for c, s in hl7 if s == "processed"}
        assert processed == {f"C{i}" for i in range(MESSAGES)}
        # every notification delivered; none twice before the kill
        counts = receiver.counts()
        assert expected <= set(counts)
        assert set(counts) <= expected  # nothing that did not match
        before = receiver.counts(run["killed"]["at"])
        assert max(before.values(), default=1) == 1, before.most_common(3)
        doubled = sum(n - 1 for n in counts.values())
        # every AI job finished once: one job per study, done, one report written once
        assert len({j.study_id for j in jobs}) == len(jobs) == len(run["studies"])
        assert {j.status for j in jobs} == {"done"}
        reports = [
            r for r in search_all(base, "DiagnosticReport?_count=500") if r.get("imagingStudy")
        ]  # the AI's (the lab results have reports too)
        assert len(reports) == len(run["studies"])
        assert {r["meta"]["versionId"] for r in reports} == {"1"}
        return {
            "notifications": len(expected),
            "delivered": sum(counts.values()),
            "doubled_after_kill": doubled,
            "all_notified_after_kill_s": round(notified_after_kill, 1),
            "resent_messages": len(hl7) - MESSAGES,
            "failovers": len(run["failovers"]),
            "ai_attempts": sorted(j.attempts for j in jobs),
            "killed": run["killed"],
        }
    finally:
        engine.dispose()
        for p in run["everyone"]:
            p.stop()


def test_three_replicas_and_a_worker_survive_a_sigkill(
    postgres_url: str, orthanc: Orthanc, receiver: Receiver, tmp_path: Path
) -> None:
    env = environment(postgres_url, tmp_path, orthanc)
    run = run_deployment(postgres_url, tmp_path, orthanc, receiver, env, [["worker"]])
    seen = check(postgres_url, receiver, run)
    print("kill test (in-process workers):", seen)


def test_with_redis_and_celery_workers(
    postgres_url: str, orthanc: Orthanc, receiver: Receiver, tmp_path: Path
) -> None:
    import redis

    url = REDIS_URL.rsplit("/", 1)[0] + "/11"  # a database of its own: the queue names are fixed
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        _missing(f"Redis at {url} ({exc})")
    # the broker's redelivery is left at its default (an hour): a killed worker's work must
    # move to the survivor by the database's leases, within seconds
    env = environment(postgres_url, tmp_path, orthanc, INTEROP_REDIS_URL=url)
    queues = "ai.decode,ai.infer,bulk,outbox"
    run = run_deployment(
        postgres_url,
        tmp_path,
        orthanc,
        receiver,
        env,
        [["worker", "--queues", queues], ["worker", "--queues", queues]],
    )
    seen = check(postgres_url, receiver, run)
    print("kill test (Celery workers):", seen)


def test_two_uvicorn_workers_on_sqlite_notify_each_change_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    env = environment(f"sqlite:///{tmp_path}/interop.db", tmp_path, INTEROP_WORKERS="2")
    server = Replica("serve", env, tmp_path)
    try:
        wait_ready([server])
        base = server.url
        assert (
            httpx.put(
                f"{base}/fhir/Subscription/hba1c", json=subscription(receiver.url)
            ).status_code
            == 201
        )
        eventually(
            lambda: httpx.get(f"{base}/fhir/Subscription/hba1c").json()["status"] == "active",
            30,
            "the handshake",
        )
        with httpx.Client(base_url=base, timeout=30) as http:  # both workers take requests
            for i in range(100):
                assert (
                    http.put(f"/fhir/Observation/o{i}", json=observation(f"o{i}", i)).status_code
                    == 201
                )
        eventually(lambda: len(receiver.notes) >= 100, 60, "100 notifications")
        time.sleep(3)  # a doubled one would come now
        counts = receiver.counts()
        assert len(receiver.notes) == 100
        assert set(counts) == {(f"o{i}", "1") for i in range(100)}
        assert receiver.handshakes == 1
    finally:
        server.stop()
