"""The message search on both databases: every filter, through the index, newest first,
keyset pages; the v2 field tree; retention."""

from __future__ import annotations

import time
from typing import Any

from console_support import adt, store
from sqlalchemy import update

from console.messages import MessageQuery, QueryError, export, search, tree
from hl7_listener.inbox import hl7_messages
from hl7_listener.retention import prune


def ids(app: Any, **filters: Any) -> list[int]:
    return [m["id"] for m in search(app.state.store.engine, MessageQuery(**filters), 50)]


def test_every_filter_finds_exactly_its_messages(console_app: Any) -> None:
    a = store(console_app, adt("A-1", "MRN-77", "Quill", extra="NTE|1||glucose was high"))
    b = store(console_app, adt("B-2", "X9", "Rook", sender="RAD", event="A08"))
    c = store(console_app, adt("C-3", "MRN-78", "Quill", extra="NTE|1||Glucose normal today"))
    assert ids(console_app, text="glucose") == [c, a]  # case-insensitive, newest first
    assert ids(console_app, text="glucose high") == [a]  # every word must be there
    assert ids(console_app, text="quill") == [c, a]  # inside a name component (PID-5.1)
    assert ids(console_app, text="nothing-like-this") == []
    assert ids(console_app, patient="MRN-77") == [a]  # the identifier, not a prefix of it
    assert ids(console_app, patient="MRN-7") == []
    assert ids(console_app, patient="X9") == [b]
    assert ids(console_app, control_id="B-2") == [b]
    assert ids(console_app, sender="RAD^HOSP") == [b]
    assert ids(console_app, message_type="ADT") == [c, b, a]  # the whole family
    assert ids(console_app, message_type="ADT^A08") == [b]
    assert ids(console_app, message_type="AD") == []
    assert ids(console_app, status="processed") == [c, b, a]
    assert ids(console_app, status="failed") == []
    assert ids(console_app, text="glucose", before=c) == [a]  # the next page
    future = int((time.time() + 3600) * 1_000_000)
    assert ids(console_app, since=future) == []
    assert ids(console_app, until=future, text="rook") == [b]


def test_query_text_that_the_index_cannot_parse_is_no_error(console_app: Any) -> None:
    a = store(console_app, adt("Q-1", "M1", "Odd", extra='NTE|1||say "hello" & (bye)'))
    for text in ('"', "*", "(", 'hello" OR', "AND", "NEAR(", "^^^", "-", "'", "\\"):
        found = ids(console_app, text=text)
        assert found in ([], [a]), text
    assert ids(console_app, text='"hello"') == [a]


def test_bad_filters_are_explained(console_app: Any) -> None:
    for params in ({"since": "yesterday"}, {"status": "lost"}, {"before": "x"}):
        try:
            MessageQuery.from_params(params)
        except QueryError as exc:
            assert str(exc)
        else:
            raise AssertionError(params)


def test_export_is_the_selection_as_an_hl7_file(console_app: Any) -> None:
    a = store(console_app, adt("E-1", "M1", "Export"))
    b = store(console_app, adt("E-2", "M2", "Export"))
    engine = console_app.state.store.engine
    both = b"".join(export(engine, MessageQuery(text="export")))
    assert both.count(b"MSH|") == 2 and both.index(b"E-2") < both.index(b"E-1")
    one = b"".join(export(engine, MessageQuery(ids=[a])))
    assert b"E-1" in one and b"E-2" not in one
    assert b


def test_the_tree_names_fields_and_components() -> None:
    segments = tree(adt("T-1", "MRN5", "Tree", given="Tom"), "2.5.1")
    pid = next(s for s in segments if s.name == "PID")
    assert pid.long_name == "Patient identification"
    field = next(f for f in pid.fields if f.position == "PID-5")
    assert field.name == "Patient name" and field.datatype == "XPN"
    assert [(c.position, c.name, c.value) for c in field.children][:2] == [
        ("PID-5.1", "Family name", "Tree"), ("PID-5.2", "Given name", "Tom"),
    ]  # fmt: skip
    msh = segments[0]
    assert [f.value for f in msh.fields[:2]] == ["|", "^~\\&"]
    z = tree(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rZXY|1|two^parts\r", "2.5")[1]
    assert z.name == "ZXY" and z.fields[1].name == "" and len(z.fields[1].children) == 2
    assert tree(b"not hl7", "2.5") == []


def test_retention_prunes_processed_first_and_failed_later(console_app: Any) -> None:
    engine = console_app.state.store.engine
    old_ok = store(console_app, adt("R-1", "M1", "Old"))
    old_failed = store(console_app, adt("R-2", "M2", "Old"))
    new_ok = store(console_app, adt("R-3", "M3", "New"))
    day = 86_400_000_000
    now_us = int(time.time() * 1_000_000)
    with engine.begin() as conn:
        conn.execute(update(hl7_messages).where(hl7_messages.c.pk == old_ok)
                     .values(received_at=now_us - 40 * day))  # fmt: skip
        conn.execute(update(hl7_messages).where(hl7_messages.c.pk == old_failed)
                     .values(received_at=now_us - 40 * day, status="failed"))  # fmt: skip
    assert prune(engine, processed_days=30, failed_days=90) == 1
    assert ids(console_app, text="old") == [old_failed]  # the index forgot the pruned one
    assert prune(engine, processed_days=30, failed_days=0) == 0  # failed: kept
    assert prune(engine, processed_days=30, failed_days=35) == 1
    assert ids(console_app) == [new_ok]


def test_words_in_most_messages_still_narrow_the_search(console_app: Any) -> None:
    """Common words are checked per candidate instead of walked: same answers."""
    made = [
        store(console_app, adt(f"W-{i}", f"M{i}", "Common", extra=f"NTE|1||glucose {note}"))
        for i, note in enumerate(["quince", "plain", "plain", "quince fig", "plain"])
    ]
    assert ids(console_app, text="glucose quince") == [made[3], made[0]]
    assert ids(console_app, text="quince glucose common fig") == [made[3]]
    assert ids(console_app, text="glucose common") == made[::-1]
    assert ids(console_app, text="glucose absentword") == []
    assert ids(console_app, text="GLUCOSE Plain", before=made[2]) == [made[1]]
