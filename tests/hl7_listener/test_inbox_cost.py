"""The inbox's duplicate lookup reads the rows that share a message's key, never the inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from fhir_server.store.db import create_db_engine, upgrade
from hl7_listener.inbox import Arrival, Inbox


def arrival(n: int) -> Arrival:
    return Arrival(b"MSH|^~\\&|LAB|HOSP", f"LAB{n % 8}^HOSP", f"C{n}", "ORU^R01", "2.5.1",
                   ack=b"MSA|AA", content_hash=f"h{n}")  # fmt: skip


def test_storing_into_a_large_inbox_costs_what_it_costs_in_an_empty_one(tmp_path: Path) -> None:
    """Every message is looked up before its ACK: a lookup that scans the inbox makes each
    ACK slower as months of messages pile up (SQLite counts the VM steps it runs)."""
    engine = create_db_engine(f"sqlite:///{tmp_path}/inbox.db")
    upgrade(engine)
    engine.dispose()
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(count, 20)

    event.listen(engine, "connect", on_connect)
    inbox = Inbox(engine)

    def cost(first: int) -> int:  # one group commit: eight senders' messages
        steps[0] = 0
        inbox.store_many([arrival(n) for n in range(first, first + 8)])
        return steps[0]

    empty = cost(0)
    inbox.store_many([arrival(n) for n in range(8, 3008)])
    assert cost(3008) <= 2 * empty + 10
    assert inbox.store(arrival(5)).original is not None  # the lookup still finds its original
