"""A message over MLLP leaves an AuditEvent naming the sender and what it changed."""

from __future__ import annotations

from typing import Any

from audit_support import assert_change_audited, audited
from test_mllp import exchange, msa, oru, run


def test_mllp_message_is_audited_with_its_sender(app: Any) -> None:
    async def scenario(port: int) -> list[bytes]:
        return await exchange(port, oru("AUD1", "123"))

    store = app.state.store
    with audited(store):
        (ack,), _, _ = run(app, scenario)
    assert msa(ack)[1] == "AA"
    with store.connection() as conn:
        rows = conn.exec_driver_sql(
            "SELECT res_type, res_id FROM resources WHERE res_type IN ('Patient', 'Observation')"
        ).all()
    changed = [f"{t}/{i}" for t, i in rows]
    assert {c.split("/")[0] for c in changed} == {"Patient", "Observation"}
    assert_change_audited(store, changed, "hl7", "LAB^HOSP")
