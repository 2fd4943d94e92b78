"""Classical CT analysis: tissue volumes by Hounsfield-unit ranges, a body-region guess, and
an intensity-outlier finding. Deterministic, no weights, and NOT diagnostic: it exists so the
whole pipeline (trigger, fetch, decode, write-back, review) runs anywhere, and it says so in
its Device description.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ai_worker.errors import BadInput
from ai_worker.pixels.volume import Volume
from ai_worker.plugins.base import (
    INTEROP_AI,
    SNOMED,
    CodedFinding,
    Coding,
    Findings,
    KeyImage,
    Measurement,
    StudyInfo,
)
from ai_worker.plugins.png import png_grey, window

BODY_THRESHOLD = -500.0  # HU: above is the patient, below is air (outside or in the lungs)
RANGES = {  # HU ranges, inclusive
    "air": (-1024.0, -500.0),
    "fat": (-190.0, -30.0),
    "soft-tissue": (-29.0, 150.0),
    "bone": (300.0, 3000.0),
}
OUTLIER_HU = 3000.0  # metal and streaks; beyond dense cortical bone
# every body voxel gets a class by a lookup table over integer HU; "other" is the gaps
# between the ranges (e.g. -499..-191, 151..299) and above the bone range
CLASSES = ("other", *RANGES)
LUT_LOW, LUT_HIGH = -1024, 4095


def _label_table() -> np.ndarray:
    table = np.zeros(LUT_HIGH - LUT_LOW + 1, np.uint8)
    values = np.arange(LUT_LOW, LUT_HIGH + 1)
    for index, (lo, hi) in enumerate(RANGES.values(), start=1):
        table[(values >= lo) & (values <= hi)] = index
    return table


_LABELS = _label_table()
HU = "[hnsf'U]"
REGIONS = {
    "chest": Coding(SNOMED, "51185008", "Thoracic structure"),
    "head": Coding(SNOMED, "69536005", "Head structure"),
    "abdomen": Coding(SNOMED, "113345001", "Abdominal structure"),
}


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Voxels inside the body outline, slice by slice: the span between the first and last
    dense voxel of every row AND of every column (so the lungs are inside, the room is not).
    First/last by argmax, not by accumulating along the axis: several times faster."""
    dense = hu > BODY_THRESHOLD

    def span(axis: int) -> np.ndarray:
        n = dense.shape[axis]  # int32 indices: comparisons on 4 bytes, not numpy's 8
        first = np.expand_dims(np.argmax(dense, axis=axis).astype(np.int32), axis)
        flipped = np.argmax(np.flip(dense, axis), axis=axis).astype(np.int32)
        last = np.int32(n - 1) - np.expand_dims(flipped, axis)
        any_dense = np.expand_dims(dense.any(axis=axis), axis)
        shape = [n if a == axis else 1 for a in range(dense.ndim)]
        index = np.arange(n, dtype=np.int32).reshape(shape)
        return (index >= first) & (index <= last) & any_dense

    return span(2) & span(1)


def region_of(body_voxels: float, air_voxels: float, bone_voxels: float) -> str:
    """A slice's region by composition: lungs make a chest, a bone ring a head."""
    if body_voxels == 0:
        return ""
    if air_voxels / body_voxels >= 0.08:
        return "chest"
    if bone_voxels / body_voxels >= 0.25:
        return "head"
    return "abdomen"


class CtClassicalPlugin:
    name = "ct-classical"
    version = "1.0.0"
    manufacturer = "interop-server"
    description = (
        "Classical CT tissue composition: volumes of air, fat, soft tissue and bone by "
        "Hounsfield-unit thresholds, a body-region guess and an intensity-outlier flag. "
        "Deterministic, no trained weights. NOT A DIAGNOSTIC DEVICE: not validated for "
        "clinical use; findings need a physician's review."
    )
    modalities = frozenset({"CT"})

    def accepts(self, study: StudyInfo) -> bool:
        return "CT" in study.modalities

    def run(self, volume: Volume, study: StudyInfo) -> Findings:
        if volume.modality != "CT":
            raise BadInput(f"{self.name} analyses CT, not {volume.modality or 'unknown'}")
        hu = volume.voxels
        ml = volume.voxel_ml
        # slice by slice, so every temporary stays in cache: a 200-slice CT is 50 M voxels
        counts = np.zeros((hu.shape[0], len(CLASSES)), np.int64)
        soft_sum = 0.0
        outliers = np.zeros(hu.shape[0], np.int64)
        for z, plane in enumerate(hu):
            body = body_mask(plane[np.newaxis])[0]
            labels = _LABELS[np.clip(plane, LUT_LOW, LUT_HIGH).astype(np.int32) - LUT_LOW]
            inside = labels[body]
            counts[z] = np.bincount(inside, minlength=len(CLASSES))
            soft_sum += float(plane[body][inside == CLASSES.index("soft-tissue")].sum())
            outliers[z] = np.count_nonzero(plane > OUTLIER_HU)
        air, bone = CLASSES.index("air"), CLASSES.index("bone")
        per_slice = [region_of(float(c.sum()), float(c[air]), float(c[bone])) for c in counts]
        regions = [r for r in per_slice if r]
        if not regions:
            raise BadInput("no body found in the volume (every voxel is air)")
        region = max(REGIONS, key=regions.count)
        totals = counts.sum(axis=0)
        n_soft = int(totals[CLASSES.index("soft-tissue")])
        n_out = int(outliers.sum())
        measurements = [
            Measurement(Coding(INTEROP_AI, f"{k}-volume", f"{k.replace('-', ' ')} volume"),
                        round(float(totals[CLASSES.index(k)]) * ml, 6), "mL")
            for k in RANGES
        ]  # fmt: skip
        measurements.append(
            Measurement(Coding(INTEROP_AI, "body-volume", "body volume"),
                        round(float(totals.sum()) * ml, 6), "mL")
        )  # fmt: skip
        if n_soft:
            measurements.append(
                Measurement(Coding(INTEROP_AI, "soft-tissue-mean", "soft tissue mean density"),
                            round(soft_sum / n_soft, 2), HU)
            )  # fmt: skip
        measurements.append(
            Measurement(
                Coding(INTEROP_AI, "outlier-volume", f"volume above {OUTLIER_HU:.0f} HU"),
                round(n_out * ml, 6),
                "mL",
                flag="H" if n_out else None,
            )
        )
        coded = [
            CodedFinding(Coding(INTEROP_AI, "body-region", "body region (HU heuristic)"),
                         REGIONS[region])
        ]  # fmt: skip
        if n_out:
            coded.append(
                CodedFinding(
                    Coding(INTEROP_AI, "intensity-outlier", "intensity outlier"),
                    Coding(SNOMED, "263654008", "Abnormal"),
                    flag="A",
                    note=f"{n_out} voxels above {OUTLIER_HU:.0f} HU (metal or artefact)",
                )
            )
        key = int(np.argmax(outliers)) if n_out else hu.shape[0] // 2
        volumes = ", ".join(f"{m.code.display} {m.value:g} mL" for m in measurements[:4])
        impression = f"Non-diagnostic classical analysis. Body region: {region}. {volumes}. " + (
            f"Intensity outlier: {n_out} voxels above {OUTLIER_HU:.0f} HU (slice {key + 1})."
            if n_out
            else "No intensity outlier."
        )
        return Findings(
            measurements=measurements,
            coded=coded,
            impression=impression,
            conclusion_codes=[REGIONS[region]],
            key_image=KeyImage(
                png_grey(window(hu[key], 40, 400)),
                f"Key image, slice {key + 1} (soft-tissue window)",
                volume.sop_uids[key] if key < len(volume.sop_uids) else "",
            ),
        )


def provide(settings: Any) -> Iterable[CtClassicalPlugin]:
    """Entry point `interop.models`: ct-classical."""
    return [CtClassicalPlugin()]
