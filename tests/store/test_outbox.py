"""Outbox consumers: each sees every committed change at least once, on its own schedule."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import insert, select

from fhir_server.clock import now_us
from fhir_server.store.models import outbox
from fhir_server.store.outbox import SETTLE_US, Change, Outbox, outbox_consumers, outbox_done
from interop.outbox_runner import OutboxRunner


def _create(client, res_type: str = "Patient", **body) -> str:  # type: ignore[no-untyped-def]
    resp = client.post(f"/fhir/{res_type}", json={"resourceType": res_type, **body})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_each_consumer_gets_every_change_once(client, app) -> None:  # type: ignore[no-untyped-def]
    pid = _create(client)
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True})
    oid = _create(client, "Observation", status="final", code={"text": "x"})
    client.delete(f"/fhir/Patient/{pid}")

    runner = OutboxRunner(app.state.store.engine)
    seen: dict[str, list[tuple[str, str]]] = {"all": [], "patients": []}
    runner.register("all", lambda c: seen["all"].append((c.reference, c.interaction)))
    runner.register(
        "patients", lambda c: seen["patients"].append((c.reference, c.interaction)), {"Patient"}
    )
    assert runner.drain() == 4 + 3
    assert seen["all"] == [
        (f"Patient/{pid}", "create"),
        (f"Patient/{pid}", "update"),
        (f"Observation/{oid}", "create"),
        (f"Patient/{pid}", "delete"),
    ]
    assert seen["patients"] == [c for c in seen["all"] if c[0].startswith("Patient/")]
    assert runner.drain() == 0  # nothing twice

    _create(client, "Observation", status="final", code={"text": "y"})
    assert runner.drain() == 1
    assert seen["all"][-1][0].startswith("Observation/")
    assert len(seen["patients"]) == 3


def test_progress_survives_a_restart(client, app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    _create(client)
    first = OutboxRunner(engine)
    first.register("push", lambda c: None)
    assert first.drain() == 1
    first.stop()
    _create(client)
    again: list[Change] = []
    second = OutboxRunner(engine)  # a new process: only the change it has not seen
    second.register("push", again.append)
    assert second.drain() == 1
    assert len(again) == 1


def test_failing_consumer_is_retried_without_holding_up_others(client, app) -> None:  # type: ignore[no-untyped-def]
    ids = [_create(client) for _ in range(3)]
    runner = OutboxRunner(app.state.store.engine)
    delivered: list[str] = []
    others: list[str] = []
    broken = {"on": True}

    def flaky(change: Change) -> None:
        if change.res_id == ids[1] and broken["on"]:
            raise ConnectionError("receiver down")
        delivered.append(change.res_id)

    runner.register("flaky", flaky)
    runner.register("steady", lambda c: others.append(c.res_id))
    runner.drain()
    assert delivered == [ids[0]]
    assert others == ids
    runner.drain()  # still backing off: nothing is retried yet
    assert delivered == [ids[0]]
    broken["on"] = False
    runner.consumers["flaky"].retry_at = 0
    runner.drain()
    assert delivered == ids


def test_late_commit_below_the_newest_key_is_not_skipped(client, app) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL commits out of key order; a consumer must not skip the late one."""
    engine = app.state.store.engine
    _create(client)
    _create(client)
    box = Outbox(engine)
    assert box.claim("c")
    first = box.pending("c")
    assert len(first) == 2
    box.done("c", first[1:])  # the newer one finished first
    late_pk = first[0].pk
    assert [c.pk for c in box.pending("c")] == [late_pk]
    box.done("c", first[:1])
    assert box.pending("c") == []


def test_settle_moves_the_floor_past_old_finished_changes(app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    old = now_us() - SETTLE_US - 1_000_000
    with engine.begin() as conn:
        for i in range(1, 4):
            conn.execute(
                insert(outbox).values(
                    pk=i,
                    res_type="Patient",
                    res_id=f"p{i}",
                    version_id=1,
                    interaction="create",
                    created=old,
                )
            )
        conn.execute(
            insert(outbox).values(
                pk=4,
                res_type="Patient",
                res_id="p4",
                version_id=1,
                interaction="create",
                created=now_us(),
            )  # fmt: skip
        )
    box = Outbox(engine)
    assert box.claim("c")
    pending = box.pending("c")
    box.done("c", [pending[0], pending[2], pending[3]])  # pk 2 unfinished
    assert box.settle("c") == 1
    box.done("c", [pending[1]])
    assert box.settle("c") == 3  # pk 4 is too recent to settle
    with engine.connect() as conn:
        marks = conn.execute(select(outbox_done.c.outbox_pk).order_by(outbox_done.c.outbox_pk))
        assert [m[0] for m in marks] == [4]
        floor = conn.execute(select(outbox_consumers.c.floor)).scalar()
    assert floor == 3
    assert box.pending("c") == []


def test_one_process_at_a_time_drains_a_consumer(app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.store.engine
    one, two = Outbox(engine), Outbox(engine)
    assert one.claim("c")
    assert not two.claim("c")
    assert one.claim("c")  # renewing is fine
    one.release("c")
    assert two.claim("c")


def test_runner_thread_delivers_soon_after_commit(client, app) -> None:  # type: ignore[no-untyped-def]
    runner = app.state.outbox_runner
    got = threading.Event()
    seen: list[str] = []

    def handle(change: Change) -> None:
        seen.append(change.reference)
        got.set()

    runner.register("live", handle, {"Patient"})
    try:
        runner.start()
        started = time.monotonic()
        pid = _create(client)
        assert got.wait(5), "the runner did not deliver the change"
        assert seen == [f"Patient/{pid}"]
        assert time.monotonic() - started < 2
    finally:
        runner.stop()
        runner.consumers.pop("live")


class Killed(BaseException):
    """A process dying mid-change (SIGKILL): nothing after it runs, not even its cleanup."""


def test_a_drain_whose_process_died_moves_to_another_within_the_lease(client, app) -> None:  # type: ignore[no-untyped-def]
    """What a Celery worker's `outbox.drain` does: drain under the consumer's lease, hand it
    back; a worker killed mid-drain keeps it until it runs out, then another takes over."""
    engine = app.state.store.engine
    pids = [_create(client) for _ in range(3)]

    def die(change: Change) -> None:
        raise Killed

    dead = OutboxRunner(engine, lease_seconds=1)
    dead.register("hook", die)
    with pytest.raises(Killed):
        dead.drain_leased("hook")
    seen: list[str] = []
    survivor = OutboxRunner(engine, lease_seconds=1)
    survivor.register("hook", lambda c: seen.append(c.res_id))
    assert survivor.drain_leased("hook") == (0, False)  # the dead one's lease still runs
    time.sleep(1.1)
    assert survivor.drain_leased("hook") == (3, False)
    assert seen == pids
    # the survivor handed the lease back: the next drain may be any process's, and sees only
    # what is new
    pids.append(_create(client))
    other = OutboxRunner(engine, lease_seconds=1)
    other.register("hook", lambda c: seen.append(c.res_id))
    assert other.drain_leased("hook") == (1, False)
    assert survivor.drain_leased("hook") == (0, False)
    assert seen == pids  # each change once, without a crash


def test_a_failing_handler_keeps_the_lease_until_it_runs_out(client, app) -> None:  # type: ignore[no-untyped-def]
    """No process retries a failed change before the lease runs out (the retry's backoff
    across workers); then any does."""
    engine = app.state.store.engine
    pid = _create(client)

    def fail(change: Change) -> None:
        raise ConnectionError("the receiver is down")

    first = OutboxRunner(engine, lease_seconds=1)
    first.register("hook", fail)
    assert first.drain_leased("hook") == (0, False)
    assert first.consumers["hook"].failures == 1
    seen: list[str] = []
    second = OutboxRunner(engine, lease_seconds=1)
    second.register("hook", lambda c: seen.append(c.res_id))
    assert second.drain_leased("hook") == (0, False)
    time.sleep(1.1)
    assert second.drain_leased("hook") == (1, False)
    assert seen == [pid]
