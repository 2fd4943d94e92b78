"""ACK messages by HL7 v2 rules: MSA-2 echoes MSH-10, MSH swaps sender and receiver."""

from __future__ import annotations

import time

from mappers.hl7v2.parser import Message

# HL7 table 0357 codes used in ERR-3.
ERR_CODES = {
    "100": "Segment sequence error",
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
    msg: Message | None, code: str, text: str = "", err: str = "", control_id: str = "",
    where: str = "",
) -> bytes:  # fmt: skip
    """An ACK for msg with MSA-1 code; ERR (location, 0357 code, text) only for v2.5+.
    `where` is the ERR-2 location, ``SEG^1^field`` with ^ as written (e.g. ``PID^1^3``);
    before v2.5, MSA-3 carries the text with the location in front."""
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
    if err and code not in ("AA", "CA"):
        cs = msg.delims.component if msg else "^"
        ss = msg.delims.subcomponent if msg else "&"
        location = (where or ("MSH^1^9" if err in ("200", "201") else "")).replace("^", cs)
        if major >= (2, 5):  # ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text
            fields = ["ERR", "", location, f"{err}{cs}{ERR_CODES.get(err, '')}{cs}HL70357",
                      "E", "", "", "", _escape(text, msg)]  # fmt: skip
        else:  # ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & table
            parts = location.split(cs) if location else []
            parts = (parts + ["", "", ""])[:3]
            code_ce = ss.join([err, ERR_CODES.get(err, ""), "HL70357"])
            fields = ["ERR", cs.join([*parts, code_ce])]
        segs.append(fs.join(fields))
    return ("\r".join(segs) + "\r").encode(_codec(msg), "replace")


def _codec(msg: Message | None) -> str:
    if msg is None:
        return "utf-8"
    charset = msg.msh.get(18).upper()
    return "latin-1" if charset == "8859/1" else "utf-8"
