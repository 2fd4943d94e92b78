"""Parser behaviour a sender would notice: delimiters, separators, escapes, charsets."""

import pytest

from mappers.hl7v2 import ParseError, parse
from mappers.hl7v2.parser import split_batch

MSH = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|CTRL1|P|2.5.1"


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(sep: str) -> None:
    msg = parse(sep.join([MSH, "PID|1||123^^^MRN||Doe^Jane", "OBX|1|NM|x"]) + sep)
    assert [s.name for s in msg.segments] == ["MSH", "PID", "OBX"]
    assert msg.first("PID").get(5, 2) == "Jane"  # type: ignore[union-attr]
    assert msg.control_id == "CTRL1"
    assert msg.message_type == "ORU^R01"
    assert msg.version == "2.5.1"


def test_unusual_delimiters() -> None:
    msg = parse("MSH#$*!@#LAB#HOSP#####ADT$A01#C9#P#2.3\rPID#1##7*8$x@sub")
    pid = msg.first("PID")
    assert pid is not None
    assert msg.message_type == "ADT^A01"
    assert pid.get(3, 1, rep=1) == "8"
    assert pid.get(3, 2, 2, rep=1) == "sub"
    assert pid.get(3, rep=0) == "7"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d", "a^b&c~d"),
        ("back\\E\\slash", "back\\slash"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\XC3A9\\t\\X41\\", "étA"),
        ("\\H\\bold\\N\\", "bold"),
    ],
)
def test_escape_sequences(raw: str, text: str) -> None:
    msg = parse(f"{MSH}\rOBX|1|ST|code||{raw}")
    assert msg.first("OBX").text(5) == text  # type: ignore[union-attr]


def test_charset_utf8_and_latin1_fallback() -> None:
    utf = (MSH + "|||||||UNICODE UTF-8\rPID|1||1||Müller^Zoë").encode()
    assert parse(utf).first("PID").get(5, 2) == "Zoë"  # type: ignore[union-attr]
    # Declared UTF-8 but latin-1 bytes: decoded as latin-1 instead of failing.
    bad = (MSH + "|||||||UNICODE UTF-8\rPID|1||1||Müller").encode("latin-1")
    assert parse(bad).first("PID").get(5) == "Müller"  # type: ignore[union-attr]
    latin = (MSH + "|||||||8859/1\rPID|1||1||Ærø").encode("latin-1")
    assert parse(latin).first("PID").get(5) == "Ærø"  # type: ignore[union-attr]


def test_not_hl7_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse(b"GET / HTTP/1.1\r\n")


def test_z_segments_and_empty_fields_are_kept() -> None:
    msg = parse(f"{MSH}\rZPI|1||custom\rPID|||")
    assert msg.first("ZPI").get(3) == "custom"  # type: ignore[union-attr]
    assert msg.first("PID").get(3) == ""  # type: ignore[union-attr]
    assert msg.first("PID").get(30) == ""  # type: ignore[union-attr]


def test_batch_split() -> None:
    data = (
        "FHS|^~\\&|X\rBHS|^~\\&|X\r"
        + MSH + "\rPID|1||1\r"
        + MSH.replace("CTRL1", "CTRL2") + "\rPID|1||2\rBTS|2\rFTS|1\r"
    ).encode()  # fmt: skip
    parts = split_batch(data)
    assert [parse(p).control_id for p in parts] == ["CTRL1", "CTRL2"]
