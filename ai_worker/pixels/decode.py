"""Decode one instance's pixel data to stored values, preferring pylibjpeg.

pydicom picks the first decoder plugin that is installed; for RLE that is its own pure-Python
decoder, ten times slower than pylibjpeg-rle, so the plugin is chosen here explicitly. The
modality LUT (rescale) is applied by the volume builder, once per slice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ImplicitVRLittleEndian

from ai_worker.errors import BadInput, MissingDecoder

# The syntaxes that need the optional GPL plugin (or GDCM): JPEG baseline/extended/lossless
# and JPEG-LS. Named so that the error can say which package to install.
GPL_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
PREFERRED = ("pylibjpeg", "gdcm", "pydicom", "pillow", "pyjpegls")


def transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else ImplicitVRLittleEndian


def _plugin_for(uid: UID) -> str:
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise BadInput(f"transfer syntax {uid} ({uid.name}) has no pixel decoder") from None
    available = decoder.available_plugins
    if uid.is_compressed and not available:
        hint = (
            "install the optional 'jpeg' extra (pylibjpeg-libjpeg, GPL-3) or python-gdcm"
            if str(uid) in GPL_SYNTAXES
            else "; ".join(decoder.missing_dependencies) or "no plugin known"
        )
        raise MissingDecoder(f"cannot decode {uid.name} ({uid}): {hint}")
    for name in PREFERRED:
        if name in available:
            return name
    return ""


def supported_syntaxes(uids: list[str]) -> dict[str, str]:
    """{syntax: plugin or the reason it cannot be decoded}, for `interop config`-style reports."""
    out = {}
    for uid in uids:
        try:
            out[uid] = _plugin_for(UID(uid)) or "native"
        except BadInput as exc:
            out[uid] = str(exc)
    return out


@lru_cache(maxsize=1)
def _pylibjpeg_decoders() -> dict[str, Any]:
    try:
        from pylibjpeg.utils import get_pixel_data_decoders
    except ImportError:
        return {}
    return dict(get_pixel_data_decoders())


def _direct(ds: Dataset, uid: UID) -> np.ndarray | None:
    """pylibjpeg's decoder for the syntax called directly, frame by frame, for the common
    case (greyscale, 8 or 16 bits, no sign extension to do): pydicom's generic decode path
    costs as much again as the HTJ2K codec itself. None: let pydicom do it."""
    func = _pylibjpeg_decoders().get(uid)
    bits = int(getattr(ds, "BitsAllocated", 0) or 0)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0)
    if func is None or bits not in (8, 16):
        return None
    if signed and int(getattr(ds, "BitsStored", bits) or bits) != bits:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    out = np.empty((count, rows, cols), dtype)
    frames = generate_frames(ds.PixelData, number_of_frames=count)
    for i, frame in enumerate(frames):
        if i >= count:
            break
        decoded = np.ascontiguousarray(func(frame, ds)).reshape(-1).view(np.uint8)
        if decoded.nbytes != rows * cols * dtype.itemsize:
            return None
        out[i] = decoded.view(dtype).reshape(rows, cols)
    return out


def _native(ds: Dataset, uid: UID) -> np.ndarray | None:
    """Uncompressed little-endian pixels as a view on the bytes (no copy, no validation)."""
    if uid.is_compressed or not uid.is_little_endian:
        return None
    bits = int(getattr(ds, "BitsAllocated", 0) or 0)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0)
    if bits not in (8, 16) or (signed and int(getattr(ds, "BitsStored", bits) or bits) != bits):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    data = ds.PixelData
    if len(data) < rows * cols * count * dtype.itemsize:
        raise BadInput(f"instance {getattr(ds, 'SOPInstanceUID', '?')}: pixel data too short")
    return np.frombuffer(data, dtype, rows * cols * count).reshape(count, rows, cols)


def decode_frames(ds: Dataset) -> np.ndarray:
    """All frames of one instance as (frames, rows, columns) stored values (no rescale)."""
    if "PixelData" not in ds:
        raise BadInput(f"instance {getattr(ds, 'SOPInstanceUID', '?')} has no pixel data")
    uid = transfer_syntax(ds)
    plugin = _plugin_for(uid)
    if getattr(ds, "SamplesPerPixel", 1) != 1:
        raise BadInput("colour images are not analysed (SamplesPerPixel != 1)")
    native = _native(ds, uid)
    if native is not None:
        return native
    if plugin == "pylibjpeg" and uid.is_compressed:
        try:
            direct = _direct(ds, uid)
        except (ValueError, RuntimeError) as exc:
            raise BadInput(f"cannot decode {getattr(ds, 'SOPInstanceUID', '?')}: {exc}") from exc
        if direct is not None:
            return direct
    options: dict[str, Any] = {"decoding_plugin": plugin} if uid.is_compressed else {}
    try:
        arr, _ = get_decoder(uid).as_array(ds, **options)
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise BadInput(f"cannot decode {getattr(ds, 'SOPInstanceUID', '?')}: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    return arr
