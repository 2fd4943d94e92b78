"""multipart/related (RFC 2387) for STOW-RS, streaming: parts go to spooled temp files.

A STOW-RS body can be gigabytes; nothing here holds more than one read chunk plus a
boundary's worth of bytes in memory.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import IO

SPOOL = 8 * 1024 * 1024
_PARAM = re.compile(r';\s*([\w-]+)\s*=\s*("([^"]*)"|[^;\s]+)')


class MultipartError(ValueError):
    """The body is not the multipart/related its Content-Type announced."""


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    main = value.split(";", 1)[0].strip().lower()
    params = {m[1].lower(): (m[3] if m[3] is not None else m[2]) for m in _PARAM.finditer(value)}
    return main, params


async def split(
    chunks: AsyncIterator[bytes], boundary: str
) -> AsyncIterator[tuple[dict[str, str], IO[bytes]]]:
    """Yield (headers, file at offset 0) per part; the caller closes the files."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    buf = b"\r\n"  # so the first delimiter looks like every other one
    state = "preamble"
    headers: dict[str, str] = {}
    out: IO[bytes] | None = None
    async for chunk in chunks:
        buf += chunk
        while True:
            if state in ("preamble", "body"):
                at = buf.find(delimiter)
                if at < 0:
                    keep = len(delimiter) + 1
                    if state == "body" and out is not None and len(buf) > keep:
                        out.write(buf[:-keep])
                        buf = buf[-keep:]
                    elif state == "preamble":
                        buf = buf[-keep:]
                    break
                if state == "body" and out is not None:
                    out.write(buf[:at])
                    out.seek(0)
                    yield headers, out
                    out = None
                buf = buf[at + len(delimiter) :]
                state = "after-delimiter"
            if state == "after-delimiter":
                if len(buf) < 2:
                    break
                if buf.startswith(b"--"):
                    return
                state = "headers"
            if state == "headers":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        raise MultipartError("part headers longer than 64 KiB")
                    break
                headers = {}
                for line in buf[:end].decode("latin-1").split("\r\n"):
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                buf = buf[end + 4 :]
                out = tempfile.SpooledTemporaryFile(SPOOL)  # noqa: SIM115 - handed to the caller
                state = "body"
    if out is not None:
        out.close()
    raise MultipartError("the multipart body ended before its closing boundary")


def encode(files: list[IO[bytes]], boundary: str | None = None) -> tuple[str, Iterator[bytes]]:
    """(Content-Type, body chunks) of a STOW-RS request made of these DICOM files."""
    boundary = boundary or uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for f in files:
            f.seek(0)
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            while block := f.read(1024 * 1024):
                yield block
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return f'multipart/related; type="application/dicom"; boundary={boundary}', body()
