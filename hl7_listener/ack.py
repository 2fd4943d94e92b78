"""ACK messages by HL7 v2 rules: MSA-2 echoes MSH-10, MSH swaps sender and receiver."""

from __future__ import annotations

import time

from mappers.hl7v2.parser import Message

# HL7 table 0357 codes used in ERR-3.
ERR_CODES = {
    "101": "Required field missing",
    "102": "Data type error",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "207": "Application internal error",
}


def _escape(text: str, msg: Message | None) -> str:
    d = msg.delims if msg else None
    fs, cs, rs, es, ss = (
        (d.field, d.component, d.repetition, d.escape, d.subcomponent) if d
        else ("|", "^", "~", "\\", "&")
    )  # fmt: skip
    text = text.replace(es, f"{es}E{es}")
    for ch, code in ((fs, "F"), (cs, "S"), (rs, "R"), (ss, "T")):
        text = text.replace(ch, f"{es}{code}{es}")
    return text.replace("\r", " ").replace("\n", " ")


def build_ack(
    msg: Message | None, code: str, text: str = "", err: str = "", control_id: str = ""
) -> bytes:
    """An ACK for msg with MSA-1 code; ERR (location, 0357 code, text) only for v2.5+."""
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    version = msg.version if msg else "2.5.1"
    if msg is not None:
        m = msg.msh
        fs = msg.delims.field
        enc = m.raw(2) or "^~\\&"
        trigger = m.get(9, 2)
        fields = [
            "MSH", enc, m.raw(5), m.raw(6), m.raw(3), m.raw(4), now, "",
            f"ACK{msg.delims.component}{trigger}" if trigger else "ACK",
            f"ACK{int(time.time() * 1000)}", m.raw(11) or "P", version,
        ]  # fmt: skip
        msh = "MSH" + fs + fs.join(fields[1:])
        orig_id = m.raw(10)
    else:
        fs = "|"
        msh = f"MSH|^~\\&|||||{now}||ACK|ACK{int(time.time() * 1000)}|P|{version}"
        orig_id = control_id
    segs = [msh, fs.join(["MSA", code, orig_id, _escape(text, msg)[:80] if text else ""])]
    try:
        major = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major = (2, 5)
    if err and code not in ("AA", "CA") and major >= (2, 5):
        cs = msg.delims.component if msg else "^"
        sev = "E"
        segs.append(
            fs.join(
                [
                    "ERR",
                    "",
                    "MSH" + cs + "1" + cs + "9" if err in ("200", "201") else "",
                    f"{err}{cs}{ERR_CODES.get(err, '')}{cs}HL70357",
                    sev,
                    "",
                    "",
                    "",
                    _escape(text, msg),
                ]
            )  # fmt: skip
        )
    return ("\r".join(segs) + "\r").encode(_codec(msg), "replace")


def _codec(msg: Message | None) -> str:
    if msg is None:
        return "utf-8"
    charset = msg.msh.get(18).upper()
    return "latin-1" if charset == "8859/1" else "utf-8"
