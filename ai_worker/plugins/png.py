"""A windowed slice as an 8-bit greyscale PNG: zlib and struct, no imaging library needed."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    low = center - width / 2
    scaled = (pixels.astype(np.float32) - low) / max(width, 1e-6)
    return np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)


def png_grey(image: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array (rows, columns) as PNG (colour type 0, bit depth 8)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("png_grey takes a 2-D uint8 array")
    rows, cols = image.shape
    raw = np.hstack([np.zeros((rows, 1), np.uint8), image]).tobytes()  # filter 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
