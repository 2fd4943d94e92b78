"""A small, fast HL7 v2 parser.

Splits like python-hl7 (string splits, no structure validation) so it stays in the
per-message hot path; hl7apy is deliberately not used here because it is ~30x slower.
Delimiters come from MSH-1/MSH-2, segments may end in CR, LF or CRLF, and bytes are
decoded by MSH-18 with a latin-1 fallback so a mislabelled message is never rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CHARSETS = {
    "": "ascii",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
}


class ParseError(ValueError):
    """The bytes are not an HL7 v2 message (no usable MSH segment)."""


@dataclass(frozen=True)
class Delimiters:
    """Separators declared by MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


@dataclass
class Segment:
    """One segment: ``fields[0]`` is the segment id, ``fields[n]`` is field n.

    Every value read through it is unescaped and stripped, so a component that is empty or
    only whitespace reads as "" and can never become a value anywhere downstream.
    """

    fields: list[str]
    delims: Delimiters
    _split: dict[int, list[list[list[str]]]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.fields[0]

    def raw(self, n: int) -> str:
        """Field n still escaped (repetitions and components unsplit)."""
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[list[list[str]]]:
        """Field n as repetitions -> components -> subcomponents, unescaped and stripped
        (split once per field: the mapper reads some fields several times)."""
        cached = self._split.get(n)
        if cached is not None:
            return cached
        raw = self.raw(n)
        d = self.delims
        if raw.strip() == "":
            split: list[list[list[str]]] = []
        elif not any(c in raw for c in (d.component, d.repetition, d.subcomponent, d.escape)):
            split = [[[raw.strip()]]]  # the common plain value: nothing to split or decode
        else:
            split = [
                [
                    [unescape(s, d).strip() for s in c.split(d.subcomponent)]
                    for c in r.split(d.component)
                ]
                for r in raw.split(d.repetition)
            ]
        self._split[n] = split
        return split

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """Value of field n, component comp, subcomponent sub (1-based), unescaped."""
        reps = self.reps(n)
        if rep >= len(reps):
            return ""
        comps = reps[rep]
        if comp > len(comps):
            return ""
        subs = comps[comp - 1]
        return subs[sub - 1] if sub <= len(subs) else ""

    def text(self, n: int) -> str:
        """Whole field n unescaped and stripped, components kept joined (ST/TX/FT values)."""
        return unescape(self.raw(n), self.delims).strip()


class Message:
    """A parsed message: ordered segments plus the header values callers need.

    Only MSH is split up front (all an ACK needs); the other segments are split the first
    time `segments` is read, so acknowledging before mapping never pays for a full parse.
    """

    def __init__(self, lines: list[str], delims: Delimiters | None = None) -> None:
        self.lines = lines  # the segment lines, batch envelope left out
        self.delims = delims or Delimiters()
        self._segments: list[Segment] | None = None
        self._msh: Segment | None = None

    @property
    def msh(self) -> Segment:
        if self._msh is None:
            first = self._segments[0] if self._segments else None
            self._msh = first or _segment(self.lines[0], self.delims)
        return self._msh

    @property
    def segments(self) -> list[Segment]:
        if self._segments is None:
            self._segments = [self.msh, *(_segment(ln, self.delims) for ln in self.lines[1:])]
        return self._segments

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def message_type(self) -> str:
        """``ORU^R01`` style code and trigger."""
        code, trigger = self.msh.get(9, 1), self.msh.get(9, 2)
        return f"{code}^{trigger}" if trigger else code

    @property
    def version(self) -> str:
        return self.msh.get(12)


def _segment(line: str, d: Delimiters) -> Segment:
    parts = line.split(d.field)
    if parts[0] == "MSH":
        # MSH-1 is the field separator itself, so shift: fields[1] == "|".
        parts = ["MSH", d.field, *parts[1:]]
    return Segment(parts, d)


_ESC_SIMPLE = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition"}


def unescape(value: str, d: Delimiters) -> str:
    """Decode \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ and \\.br\\ escape sequences."""
    e = d.escape
    if not e or e not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != e:
            out.append(ch)
            i += 1
            continue
        end = value.find(e, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        if seq in _ESC_SIMPLE:
            out.append(getattr(d, _ESC_SIMPLE[seq]))
        elif seq == "E":
            out.append(e)
        elif seq == ".br":
            out.append("\n")
        elif seq.startswith("X") and re.fullmatch(r"X([0-9A-Fa-f]{2})+", seq):
            data = bytes.fromhex(seq[1:])
            try:
                out.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(data.decode("latin-1"))
        elif seq[:1] in ("H", "N") and len(seq) == 1:
            pass  # highlight on/off: formatting only
        else:
            out.append(value[i : end + 1])
        i = end + 1
    return "".join(out)


def decode(raw: bytes) -> str:
    """Decode bytes by MSH-18, falling back to latin-1 rather than failing."""
    head = raw[:1024].split(b"\r", 1)[0].split(b"\n", 1)[0]
    charset = ""
    if head.startswith(b"MSH") and len(head) > 3:
        parts = head.split(head[3:4])
        if len(parts) > 17:
            charset = (
                parts[17]
                .decode("ascii", "replace")
                .split(chr(head[4]) if len(head) > 4 else "^")[0]
            )
    enc = _CHARSETS.get(charset.strip().upper(), "utf-8")
    try:
        return raw.decode(enc)
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def parse(data: bytes | str) -> Message:
    """Parse one message; raises ParseError when there is no MSH segment."""
    text = decode(data) if isinstance(data, bytes) else data
    body = text.strip("\x0b\x1c\r\n ")
    if "\n" in body:  # segments may end in CR, LF or CRLF
        body = body.replace("\r\n", "\r").replace("\n", "\r")
    lines = [ln for ln in body.split("\r") if ln and not ln.isspace()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise ParseError("message does not start with an MSH segment")
    msh = lines[0]
    fs = msh[3]
    enc = msh[4:].split(fs, 1)[0]
    enc = enc + "^~\\&"[len(enc) :] if len(enc) < 4 else enc
    d = Delimiters(fs, enc[0], enc[1], enc[2], enc[3])
    return Message([ln for ln in lines if not ln.startswith(_ENVELOPE)], d)


_ENVELOPE = ("FHS", "BHS", "BTS", "FTS")


def split_batch(data: bytes) -> list[bytes]:
    """Split a batch file (FHS/BHS...BTS/FTS) or concatenated messages into messages."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    out: list[bytes] = []
    cur: list[bytes] = []
    for seg in text.split(b"\r"):
        if not seg.strip() or seg[:3] in (b"FHS", b"BHS", b"BTS", b"FTS"):
            continue
        if seg.startswith(b"MSH") and cur:
            out.append(b"\r".join(cur) + b"\r")
            cur = []
        cur.append(seg)
    if cur:
        out.append(b"\r".join(cur) + b"\r")
    return out
