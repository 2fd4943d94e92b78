"""HL7 v2 feeds as hospitals send them: nothing dropped, results version, order per patient."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from hl7_listener.inbox import Inbox
from hl7_listener.lanes import Lanes
from hl7_listener.processor import Processor
from mappers.hl7v2 import parse

HEAD = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|{time}||ORU^R01|{ctrl}|P|2.5.1{modes}"
PID = "PID|1||{mrn}^^^HOSP^MR||Doe^Jane||19800102|F"


def oru(ctrl: str, st: str = "F", value: int = 100, *, mrn: str = "123",
        time_: str = "20240101120000", modes: str = "", obx: int = 10, orc: bool = True,
        order: str = "FI1") -> bytes:  # fmt: skip
    lines = [HEAD.format(time=time_, ctrl=ctrl, modes=modes), PID.format(mrn=mrn)]
    if orc:
        lines.append(f"ORC|RE|PL1|{order}")
    lines.append(f"OBR|1|PL1|{order}^LAB|24323-8^Panel^LN|||20240101110000" + "|" * 18 + st)
    lines += [
        f"OBX|{k}|NM|{1000 + k}-1^Analyte {k}^LN||{value + k}|mg/dL^^UCUM|1-9||||{st}"
        for k in range(1, obx + 1)
    ]
    return "\r".join(lines).encode()


def make(app: Any, mode: str = "map") -> Processor:
    return Processor(Inbox(app.state.store.engine), app.state.store, ack_mode=mode)


def msa(ack: bytes | None) -> list[str]:
    assert ack is not None
    return next(s for s in ack.decode().split("\r") if s.startswith("MSA")).split("|")


def total(client: TestClient, query: str) -> int:
    return int(client.get(f"/fhir/{query}", params={"_summary": "count"}).json()["total"])


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in client.get(f"/fhir/{query}").json().get("entry", [])]


# -- 1. duplicates are the same message, not the same control id ----------------------------


def test_reused_control_id_with_other_content_is_a_new_message(
    app: Any, client: TestClient
) -> None:
    proc = make(app)
    first = proc.handle(oru("C1", "F", 100))
    corrected = proc.handle(oru("C1", "C", 200))  # same MSH-10, other content
    assert msa(first.ack)[1] == msa(corrected.ack)[1] == "AA"
    rows = proc.inbox.list()
    assert [r.status for r in rows] == ["processed", "processed"]
    assert rows[0].flags == ["control-id-reuse"] and rows[1].flags == []
    obs = search(client, "Observation?code=1001-1")
    assert [(o["status"], o["valueQuantity"]["value"]) for o in obs] == [("corrected", 201)]
    listed = client.get("/hl7/messages").json()["messages"]
    assert listed[0]["flags"] == ["control-id-reuse"] and "reused" in listed[0]["warning"]


def test_resend_with_a_new_timestamp_is_a_duplicate(app: Any, client: TestClient) -> None:
    proc = make(app)
    first = proc.handle(oru("R1", value=100))
    again = proc.handle(oru("R1", value=100, time_="20240101121500"))
    assert again.ack == first.ack
    assert [r.status for r in proc.inbox.list()] == ["duplicate", "processed"]
    obs = search(client, "Observation?code=1001-1")
    assert obs[0]["meta"]["versionId"] == "1"  # not applied twice


def test_a_resend_stored_in_the_same_commit_as_its_original_is_a_duplicate(
    app: Any, client: TestClient
) -> None:
    """A sender that timed out resends on a new connection while the original is still
    being stored: both land in one group commit, and the resend is still a duplicate."""
    proc = make(app, "store")
    first, again, other = proc.handle_many(
        [
            (oru("B1", value=100), "conn-1"),
            (oru("B1", value=100, time_="20240101121500"), "conn-2"),
            (oru("B1", value=300), "conn-3"),  # same control id, other content
        ]
    )
    assert again.ack == first.ack and msa(other.ack)[1] == "AA"
    rows = proc.inbox.list(oldest_first=True)
    assert [r.status for r in rows] == ["received", "duplicate", "received"]
    assert rows[1].error == f"duplicate of {rows[0].pk}"
    assert rows[2].flags == ["control-id-reuse"]
    proc.process_pending()
    obs = search(client, "Observation?code=1001-1")
    assert [o["meta"]["versionId"] for o in obs] == ["2"]  # the resend was not applied again
    assert obs[0]["valueQuantity"]["value"] == 301


@pytest.mark.parametrize(
    ("modes", "acks"),
    [("|||NE|NE", 0), ("|||AL|NE", 1), ("|||ER|ER", 0), ("|||SU|NE", 1)],
)
def test_a_duplicate_gets_no_ack_the_original_did_not_get(app: Any, modes: str, acks: int) -> None:
    proc = make(app)
    first = proc.handle(oru("N1", modes=modes))
    sent = [a for a in (first.ack, first.followup() if first.followup else None) if a]
    again = proc.handle(oru("N1", modes=modes, time_="20240102000000"))
    resent = [a for a in (again.ack, again.followup() if again.followup else None) if a]
    assert len(sent) == acks + (1 if "|NE" not in modes[-3:] and modes[-2:] != "ER" else 0)
    assert len(resent) == acks  # the accept ACK it had, never one it did not have
    assert proc.inbox.list()[0].status == "duplicate"


def test_cli_lists_and_shows_the_reuse_flag(
    app: Any, database_url: str, monkeypatch: Any, capsys: Any
) -> None:
    from interop.cli import main
    from interop.settings import get_settings

    proc = make(app)
    proc.handle(oru("Q1", value=1))
    proc.handle(oru("Q1", value=2))
    pk = proc.inbox.list()[0].pk
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert main(["hl7", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["messages"]
        assert [m["flags"] for m in listed] == [["control-id-reuse"], []]
        assert main(["hl7", "list"]) == 0
        assert "control-id-reuse" in capsys.readouterr().out
        assert main(["hl7", "list", "--flag", "control-id-reuse", "--json"]) == 0
        assert [m["id"] for m in json.loads(capsys.readouterr().out)["messages"]] == [pk]
        assert main(["hl7", "show", str(pk), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["flags"] == ["control-id-reuse"]
    finally:
        get_settings.cache_clear()


# -- 2. a result has one identity and never moves backwards ---------------------------------


def test_preliminary_then_final_versions_the_same_results(app: Any, client: TestClient) -> None:
    proc = make(app)
    prelim = oru("P1", "P", 100)
    # the final: other MSH-10 and time, OBX set ids renumbered and in another order
    lines = oru("P2", "F", 110, time_="20240101180000").decode().split("\r")
    obx = [ln.split("|") for ln in lines[4:]]
    for i, f in enumerate(reversed(obx)):
        f[1] = str(i + 7)
    final = "\r".join(lines[:4] + ["|".join(f) for f in reversed(obx)]).encode()
    assert msa(proc.handle(prelim).ack)[1] == "AA"
    assert msa(proc.handle(final).ack)[1] == "AA"
    assert total(client, "Observation") == 10
    assert total(client, "DiagnosticReport") == 1
    (report,) = search(client, "DiagnosticReport")
    assert report["status"] == "final" and report["meta"]["versionId"] == "2"
    assert len(report["result"]) == 10
    obs = search(client, "Observation?code=1001-1")[0]
    assert obs["status"] == "final" and obs["valueQuantity"]["value"] == 111
    history = client.get(f"/fhir/Observation/{obs['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["final", "preliminary"]


def test_preliminary_after_final_is_kept_with_a_warning(app: Any, client: TestClient) -> None:
    proc = make(app)
    assert msa(proc.handle(oru("F1", "F", 100, obx=3)).ack)[1] == "AA"
    late = proc.handle(oru("F0", "P", 50, obx=4))  # sent earlier, arrives late; one new OBX
    assert msa(late.ack)[1] == "AA"
    row = proc.inbox.list()[0]
    assert row.status == "processed"
    assert row.warning and "never moves backwards" in row.warning
    assert "final" in row.warning and "preliminary" in row.warning
    statuses = {o["code"]["coding"][0]["code"]: (o["status"], o.get("valueQuantity", {}).get(
        "value")) for o in search(client, "Observation?_count=50")}  # fmt: skip
    assert statuses == {"1001-1": ("final", 101), "1002-1": ("final", 102),
                        "1003-1": ("final", 103), "1004-1": ("preliminary", 54)}  # fmt: skip
    (report,) = search(client, "DiagnosticReport")
    assert report["status"] == "final" and report["meta"]["versionId"] == "1"


def test_cancelled_and_corrections_after_final(app: Any, client: TestClient) -> None:
    proc = make(app)
    proc.handle(oru("X1", "F", 100, obx=1))
    proc.handle(oru("X2", "C", 300, obx=1))
    proc.handle(oru("X3", "F", 100, obx=1))  # an old final after the correction
    obs = search(client, "Observation")[0]
    assert (obs["status"], obs["valueQuantity"]["value"]) == ("corrected", 301)
    assert "never moves backwards" in (proc.inbox.list()[0].warning or "")


# -- 3. every OBR group is a DiagnosticReport -------------------------------------------------


def test_oru_without_orc_has_a_report_per_obr(app: Any, client: TestClient) -> None:
    proc = make(app)
    two = (
        oru("O1", orc=False, obx=2)
        + b"\r"
        + b"\r".join(oru("x", orc=False, order="FI2", obx=3).split(b"\r")[2:])
    )
    assert msa(proc.handle(two).ack)[1] == "AA"
    assert total(client, "DiagnosticReport") == 2
    assert total(client, "Observation") == 5
    sizes = sorted(len(r["result"]) for r in search(client, "DiagnosticReport"))
    assert sizes == [2, 3]


# -- 4. patient identifiers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "identifier"),
    [
        ("PID|1||   ^^^HOSP^MR|77^^^ALT^PI|Doe^Jane", "urn:hl7v2:authority:ALT|77"),
        ("PID|1|55^^^EXT||| |Doe^Jane", "urn:hl7v2:authority:EXT|55"),
        ("PID|1|| ~88^^^HOSP^MR||Doe^Jane", "urn:hl7v2:authority:HOSP|88"),
    ],
)
def test_blank_pid3_falls_back_to_pid2_and_pid4(
    app: Any, client: TestClient, pid: str, identifier: str
) -> None:
    proc = make(app)
    raw = oru("B1").decode().split("\r")
    raw[1] = pid
    reply = proc.handle("\r".join(raw).encode())
    assert msa(reply.ack)[1] == "AA", reply.ack
    (patient,) = search(client, f"Patient?identifier={identifier}")
    values = [i["value"] for i in patient["identifier"]]
    assert all(v.strip() == v and v for v in values)


@pytest.mark.parametrize("version", ["2.5.1", "2.3"])
def test_no_patient_identifier_at_all_is_ae_naming_pid3(app: Any, version: str) -> None:
    proc = make(app)
    raw = oru("B2").decode().replace("|2.5.1", f"|{version}").split("\r")
    raw[1] = "PID|1| |  ~ ^^^HOSP^MR| |Doe^Jane"
    reply = proc.handle("\r".join(raw).encode())
    assert msa(reply.ack)[1] == "AE"
    err = next(s for s in (reply.ack or b"").decode().split("\r") if s.startswith("ERR"))
    assert "PID^1^3" in err and "101" in err
    assert proc.inbox.list()[0].status == "failed"


# -- 5. missing optional header fields ----------------------------------------------------


def test_message_without_control_id_or_time_maps_and_is_keyed_by_content(
    app: Any, client: TestClient
) -> None:
    proc = make(app)
    raw = oru("", time_="", obx=1)
    first = proc.handle(raw)
    assert msa(first.ack)[1] == "AA", first.ack
    (prov,) = search(client, "Provenance")
    assert "entity" not in prov and prov["recorded"].startswith("20")
    again = proc.handle(raw)
    assert again.ack == first.ack
    other = proc.handle(oru("", time_="", obx=1, value=5))
    assert msa(other.ack)[1] == "AA"
    assert [r.status for r in proc.inbox.list()] == ["processed", "duplicate", "processed"]


# -- order per patient, parallel across patients --------------------------------------------


def test_lanes_keep_order_per_key_and_run_keys_in_parallel() -> None:
    lanes = Lanes(3)
    done: list[str] = []
    gate = threading.Event()

    def job(name: str, wait: bool = False) -> str:
        if wait:
            assert gate.wait(5)
        done.append(name)
        return name

    slow = [lanes.submit("A", lambda i=i: job(f"A{i}", wait=(i == 0))) for i in range(3)]
    fast = [lanes.submit("B", lambda i=i: job(f"B{i}")) for i in range(3)]
    assert [f.result(5) for f in fast] == ["B0", "B1", "B2"]  # A's slow job holds only A
    assert done == ["B0", "B1", "B2"]
    gate.set()
    assert [f.result(5) for f in slow] == ["A0", "A1", "A2"]
    lanes.shutdown()


def test_one_patients_messages_apply_in_arrival_order(app: Any, client: TestClient) -> None:
    proc = make(app, "store")
    for i in range(12):  # alternating patients, each a new value of the same result
        proc.handle(oru(f"M{i}", value=i * 10, mrn=str(i % 2), order=f"O{i % 2}", obx=1))
    assert proc.process_pending() == 12
    assert {r.status for r in proc.inbox.list()} == {"processed"}
    values = {o["identifier"][0]["value"]: o["valueQuantity"]["value"]
              for o in search(client, "Observation")}  # fmt: skip
    assert values == {"O0-1001-1": 101, "O1-1001-1": 111}  # the last arrival of each
    obs = search(client, "Observation?identifier=O0-1001-1")[0]
    assert obs["meta"]["versionId"] == "6"


def test_concurrent_senders_one_patient_keep_inbox_order(app: Any, client: TestClient) -> None:
    proc = make(app)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            proc.handle(oru(f"T{i}", value=i, obx=1))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    last = max(proc.inbox.list(), key=lambda r: r.pk)  # the last to arrive wins
    expected = int(parse(last.raw).control_id[1:]) + 1
    assert search(client, "Observation")[0]["valueQuantity"]["value"] == expected
    time.sleep(0)
