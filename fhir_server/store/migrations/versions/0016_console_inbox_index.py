"""the operator console's message search: indexes on the HL7 inbox, a full-text index of the
raw messages, and the patient identifiers (PID-2, PID-3) of each message

Full text: PostgreSQL keeps a `tsvector` column (`search`, filled by a trigger from the raw
bytes, GIN-indexed); SQLite an FTS5 table over `raw` (external content, kept by triggers).
Either way the inbox's writers need not know: every insert and delete keeps the index.
`patient_ids` (" id1 id2 ", written by the inbox) narrows a full-text hit to messages whose
PID names that identifier.

Revision ID: 0016_console_inbox_index
Revises: 0015_audit_pending
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0016_console_inbox_index"
down_revision = "0015_audit_pending"
branch_labels = None
depends_on = None

# (name, columns): each filter of the message search, newest first within it
INDEXES = [
    ("ix_hl7_messages_received", ["received_at"]),
    ("ix_hl7_messages_control", ["control_id", "pk"]),
    ("ix_hl7_messages_type_pk", ["message_type", "pk"]),
    ("ix_hl7_messages_status_pk", ["status", "pk"]),
    ("ix_hl7_messages_sender_pk", ["sender", "pk"]),
]

# HL7 delimiters become spaces, so `12345^^^HOSP` is the words 12345 and hosp. Bytes are read
# as Latin-1 (which cannot fail), and again as UTF-8 only when they hold non-ASCII characters
# (an exception block costs a subtransaction: not on every message); a message with NUL bytes
# is read escaped. The first 100,000 characters are indexed (a tsvector holds at most 1 MB).
# Never raises: a message is always stored.
PG_FUNCTION = r"""
CREATE OR REPLACE FUNCTION hl7_search_vector(message bytea) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    body text;
BEGIN
    IF position('\x00'::bytea IN message) > 0 THEN
        body := encode(message, 'escape');
    ELSE
        body := convert_from(message, 'LATIN1');
        IF body ~ '[^\x01-\x7f]' THEN
            BEGIN
                body := convert_from(message, 'UTF8');
            EXCEPTION WHEN others THEN
                NULL;  -- not UTF-8: Latin-1 it is
            END;
        END IF;
    END IF;
    RETURN to_tsvector('simple', translate(left(body, 100000), '|^~&\', '     '));
END
$$;
CREATE OR REPLACE FUNCTION hl7_messages_search() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := hl7_search_vector(NEW.raw);
    RETURN NEW;
END
$$;
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER hl7_messages_fts_insert AFTER INSERT ON hl7_messages BEGIN
        INSERT INTO hl7_messages_fts(rowid, raw) VALUES (new.pk, new.raw);
    END""",
    """CREATE TRIGGER hl7_messages_fts_delete AFTER DELETE ON hl7_messages BEGIN
        INSERT INTO hl7_messages_fts(hl7_messages_fts, rowid, raw)
        VALUES ('delete', old.pk, old.raw);
    END""",
    """CREATE TRIGGER hl7_messages_fts_update AFTER UPDATE OF raw ON hl7_messages BEGIN
        INSERT INTO hl7_messages_fts(hl7_messages_fts, rowid, raw)
        VALUES ('delete', old.pk, old.raw);
        INSERT INTO hl7_messages_fts(rowid, raw) VALUES (new.pk, new.raw);
    END""",
]


def _patient_ids(raw: bytes) -> str | None:
    """PID-2 and PID-3 identifiers (first component of each repetition), as the inbox writes
    them (hl7_listener.inbox.patient_ids); repeated here because a migration stands alone."""
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return None
    fs, comp, rep = raw[3:4], raw[4:5], raw[5:6]
    found: list[str] = []
    for segment in re.split(rb"[\r\n]+", raw):
        if segment[:3] == b"PID":
            fields = segment.split(fs)
            for field in fields[2:4]:
                for repetition in field.split(rep):
                    value = repetition.split(comp)[0].strip().replace(b" ", b"_")
                    if value:
                        found.append(value.decode("utf-8", "replace").replace("\x00", ""))
    found = list(dict.fromkeys(found))
    return (" " + " ".join(found) + " ")[:1000] if found else None


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("hl7_messages") as batch:
        batch.add_column(sa.Column("patient_ids", sa.Text(), nullable=True))
    for name, columns in INDEXES:
        op.create_index(name, "hl7_messages", columns)
    # the messages stored so far get their patient identifiers
    table = sa.table("hl7_messages", sa.column("pk"), sa.column("raw"), sa.column("patient_ids"))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(table.c.pk, table.c.raw).where(table.c.pk > last).order_by(table.c.pk)
            .limit(1000)
        ).all()  # fmt: skip
        if not rows:
            break
        for pk, raw in rows:
            ids = _patient_ids(bytes(raw))
            if ids:
                bind.execute(table.update().where(table.c.pk == pk).values(patient_ids=ids))
        last = rows[-1][0]
    if bind.dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute("ALTER TABLE hl7_messages ADD COLUMN search tsvector")
        op.execute("UPDATE hl7_messages SET search = hl7_search_vector(raw)")
        op.execute(
            "CREATE TRIGGER hl7_messages_search BEFORE INSERT OR UPDATE OF raw ON hl7_messages "
            "FOR EACH ROW EXECUTE FUNCTION hl7_messages_search()"
        )
        op.execute("CREATE INDEX ix_hl7_messages_search ON hl7_messages USING gin (search)")
    else:
        op.execute(
            "CREATE VIRTUAL TABLE hl7_messages_fts USING fts5("
            "raw, content='hl7_messages', content_rowid='pk')"
        )
        # the index's own word counts: the search walks its rarest words
        op.execute(
            "CREATE VIRTUAL TABLE hl7_messages_fts_terms USING fts5vocab(hl7_messages_fts, 'row')"
        )
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO hl7_messages_fts(hl7_messages_fts) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS hl7_messages_search ON hl7_messages")
        op.execute("DROP INDEX IF EXISTS ix_hl7_messages_search")
        op.execute("ALTER TABLE hl7_messages DROP COLUMN search")
        op.execute("DROP FUNCTION IF EXISTS hl7_messages_search()")
        op.execute("DROP FUNCTION IF EXISTS hl7_search_vector(bytea)")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS hl7_messages_fts_{name}")
        op.execute("DROP TABLE IF EXISTS hl7_messages_fts_terms")
        op.execute("DROP TABLE IF EXISTS hl7_messages_fts")
    for name, _ in INDEXES:
        op.drop_index(name, table_name="hl7_messages")
    with op.batch_alter_table("hl7_messages") as batch:
        batch.drop_column("patient_ids")
