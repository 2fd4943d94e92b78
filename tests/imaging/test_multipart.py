"""The streaming multipart/related splitter: parts survive any chunking of the body."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest

from dicomweb_bridge.multipart import MultipartError, content_type_params, encode, split


def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen()


async def _parts(data: bytes, boundary: str, size: int) -> list[tuple[dict[str, str], bytes]]:
    out = []
    async for headers, f in split(_chunks(data, size), boundary):
        out.append((headers, f.read()))
        f.close()
    return out


# near-misses of the delimiter must stay data (a payload never holds the delimiter itself)
PAYLOADS = [b"\x00" * 10, b"\r\n--b0undar" * 50 + b"\r\n", b"", bytes(range(256)) * 40]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096, 1 << 20])
def test_parts_round_trip_whatever_the_chunking(size: int) -> None:
    content_type, body = encode([io.BytesIO(p) for p in PAYLOADS], boundary="b0undary")
    kind, params = content_type_params(content_type)
    assert kind == "multipart/related" and params["type"] == "application/dicom"
    parts = asyncio.run(_parts(b"preamble\r\n" + b"".join(body), params["boundary"], size))
    assert [p for _, p in parts] == PAYLOADS
    assert all(h["content-type"] == "application/dicom" for h, _ in parts)


def test_a_body_without_its_closing_boundary_is_an_error() -> None:
    with pytest.raises(MultipartError):
        asyncio.run(_parts(b"--b\r\nContent-Type: x\r\n\r\nabc", "b", 2))


def test_quoted_boundary_parameter() -> None:
    kind, params = content_type_params('multipart/related; boundary="a b"; type=application/dicom')
    assert (
        params == {"boundary": "a b", "type": "application/dicom"} and kind == "multipart/related"
    )
