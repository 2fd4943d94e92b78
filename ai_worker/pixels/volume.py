"""Slices to a volume: rescale to modality units, sort along the slice normal, find spacing.

Instances arrive in whatever order the PACS streams them, and InstanceNumber is not a
geometry: slices are ordered by the projection of ImagePositionPatient on the normal of the
image plane (row x column direction cosines), and the slice spacing is the median step of
those projections (SliceThickness is the slab width, not the distance between slices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import Dataset

from ai_worker.errors import BadInput
from ai_worker.pixels.decode import decode_frames, transfer_syntax


@dataclass
class Volume:
    """One series as a (slices, rows, columns) array in modality units (HU for CT): int16 when
    the rescale keeps integers in range (CT, the usual case: half the memory of float32),
    float32 otherwise."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]  # (slice, row, column) in mm
    origin: tuple[float, float, float]
    normal: tuple[float, float, float]
    series_uid: str
    modality: str
    sop_uids: list[str]
    transfer_syntaxes: set[str] = field(default_factory=set)
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def voxel_ml(self) -> float:
        """The volume of one voxel in millilitres (mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass
class _Slice:
    position: float
    origin: tuple[float, float, float]
    pixels: np.ndarray  # stored values, as decoded
    slope: float
    intercept: float
    sop_uid: str
    lo: float  # smallest and largest stored value: decides whether int16 can hold the result
    hi: float


def _floats(value: Any, count: int, default: list[float]) -> list[float]:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return default
    return out if len(out) == count else default


def _fits_int16(s: _Slice) -> bool:
    return (
        s.slope == 1
        and s.pixels.dtype.kind in "iu"
        and float(s.intercept).is_integer()
        and s.lo + s.intercept >= -32768
        and s.hi + s.intercept <= 32767
    )


class VolumeBuilder:
    """Takes instances one by one (as they stream in) and builds one Volume per series."""

    def __init__(self) -> None:
        self._series: dict[str, list[_Slice]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self.bytes_decoded = 0

    def add(self, ds: Dataset) -> None:
        series = str(getattr(ds, "SeriesInstanceUID", ""))
        values = decode_frames(ds)
        self.bytes_decoded += values.nbytes
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        meta = self._meta.get(series)
        if meta is None:  # series attributes: read once, from its first instance
            row_col = _floats(getattr(ds, "ImageOrientationPatient", None), 6, [1, 0, 0, 0, 1, 0])
            normal = np.cross(row_col[:3], row_col[3:])
            meta = self._meta[series] = {
                "normal": tuple(float(v) for v in normal),
                "pixel_spacing": _floats(getattr(ds, "PixelSpacing", None), 2, [1.0, 1.0]),
                "thickness": float(getattr(ds, "SliceThickness", 0) or 0),
                "between": float(getattr(ds, "SpacingBetweenSlices", 0) or 0),
                "modality": str(getattr(ds, "Modality", "")),
                "shape": values.shape[1:],
                "syntaxes": set(),
                "attributes": {
                    "BodyPartExamined": str(getattr(ds, "BodyPartExamined", "")),
                    "SeriesDescription": str(getattr(ds, "SeriesDescription", "")),
                    "StudyInstanceUID": str(getattr(ds, "StudyInstanceUID", "")),
                },
            }
        normal = np.asarray(meta["normal"])
        origin = _floats(getattr(ds, "ImagePositionPatient", None), 3, [])
        if values.shape[1:] != meta["shape"]:
            raise BadInput(f"series {series} mixes image sizes {meta['shape']}/{values.shape[1:]}")
        meta["syntaxes"].add(str(transfer_syntax(ds)))
        slices = self._series.setdefault(series, [])
        step = meta["between"] or meta["thickness"] or 1.0
        for i, frame in enumerate(values):
            if origin:
                point = (origin[0], origin[1], origin[2])
                pos = float(np.dot(point, normal)) + i * step
            else:  # no geometry: keep the stream order
                point, pos = (0.0, 0.0, 0.0), float(len(slices))
            sop = str(getattr(ds, "SOPInstanceUID", ""))
            hi = float(frame.max())
            lo = 0.0 if frame.dtype.kind == "u" else float(frame.min())
            slices.append(_Slice(pos, point, frame, slope, intercept, sop, lo, hi))

    def series(self) -> list[str]:
        return list(self._series)

    def build(self, series: str) -> Volume:
        slices = sorted(self._series[series], key=lambda s: s.position)
        meta = self._meta[series]
        steps = np.diff([s.position for s in slices])
        if len(steps) and np.median(steps) > 0:
            z = float(np.median(steps))
        else:
            z = meta["between"] or meta["thickness"] or 1.0
        row, col = meta["pixel_spacing"]
        # rescale straight into one preallocated array: one pass per slice, no stacked copy
        if all(_fits_int16(s) for s in slices):
            voxels = np.empty((len(slices), *meta["shape"]), np.int16)
            for k, s in enumerate(slices):
                px = s.pixels
                if px.dtype == np.uint16 and s.hi <= 32767:
                    px = px.view(np.int16)  # same values: add in a 2-byte loop
                if px.dtype == np.int16:
                    np.add(px, np.int16(s.intercept), out=voxels[k])
                else:
                    np.add(px, np.int32(s.intercept), out=voxels[k], casting="unsafe")
        else:
            voxels = np.empty((len(slices), *meta["shape"]), np.float32)
            for k, s in enumerate(slices):
                if s.slope != 1:
                    np.multiply(s.pixels, np.float32(s.slope), out=voxels[k], dtype=np.float32)
                    voxels[k] += np.float32(s.intercept)
                else:
                    np.add(s.pixels, np.float32(s.intercept), out=voxels[k], dtype=np.float32)
        return Volume(
            voxels=voxels,
            spacing=(z, float(row), float(col)),
            origin=slices[0].origin,
            normal=meta["normal"],
            series_uid=series,
            modality=meta["modality"],
            sop_uids=[s.sop_uid for s in slices],
            transfer_syntaxes=meta["syntaxes"],
            attributes=meta["attributes"],
        )

    def largest(self, modalities: set[str] | None = None) -> Volume:
        """The series with the most slices (of an accepted modality): what models analyse."""
        candidates = [
            s for s in self._series if not modalities or self._meta[s]["modality"] in modalities
        ]
        if not candidates:
            raise BadInput("the study has no series with pixel data the model accepts")
        return self.build(max(candidates, key=lambda s: len(self._series[s])))
