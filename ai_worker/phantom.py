"""A synthetic CT phantom with known tissue volumes, written as DICOM in any transfer syntax.

Tests, the benchmark and an operator's smoke check need CT series whose right answers are
known without a radiologist: an elliptic body of soft tissue under a fat layer, two lungs,
a spine, optionally a metal implant (the intensity outlier). Nothing is downloaded.
HTJ2K is encoded with `ojph_compress` (Debian's openjph-tools): pydicom cannot encode it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")
HTJ2K_RPCL = UID("1.2.840.10008.1.2.4.202")
HTJ2K = UID("1.2.840.10008.1.2.4.203")
SYNTAXES = {
    "uncompressed": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "htj2k": HTJ2K_LOSSLESS,
    "htj2k-rpcl": HTJ2K_RPCL,
    "htj2k-general": HTJ2K,  # .203 may be lossy; encoded reversibly here all the same
}

AIR, LUNG, FAT, SOFT, BONE, METAL = -1000, -850, -100, 40, 700, 3500
INTERCEPT = -1024


@dataclass
class Phantom:
    hu: np.ndarray  # (slices, rows, columns) int16 Hounsfield units, slice 0 lowest z
    spacing: tuple[float, float, float]  # (slice, row, column) mm

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def ml(self, hu_value: int) -> float:
        """Millilitres of one material (the right answer for the classical plugin)."""
        return float(np.count_nonzero(self.hu == hu_value)) * self.voxel_ml


def make_phantom(
    slices: int = 12,
    size: int = 64,
    metal: bool = False,
    spacing: float = 2.5,
    noise: float = 0.0,
    seed: int = 0,
) -> Phantom:
    """A chest-like phantom; the spine's radius grows with z so slice order is checkable.
    `noise` (HU, Gaussian) makes it compress like a real scan (benchmarks), and blurs the
    tissue volumes (tests keep it 0)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    ry, rx = size * 0.375, size * 0.44
    body = ((yy - c) / ry) ** 2 + ((xx - c) / rx) ** 2 <= 1
    inner = ((yy - c) / (ry - size / 16)) ** 2 + ((xx - c) / (rx - size / 16)) ** 2 <= 1
    lung_r = size * 0.11
    lungs = ((yy - c) ** 2 + (xx - c - size * 0.19) ** 2 <= lung_r**2) | (
        (yy - c) ** 2 + (xx - c + size * 0.19) ** 2 <= lung_r**2
    )
    hu = np.full((slices, size, size), AIR, dtype=np.int16)
    for z in range(slices):
        plane = hu[z]
        plane[body] = FAT
        plane[inner] = SOFT
        plane[lungs & inner] = LUNG
        spine_r = 1.5 + 2.5 * z / max(1, slices - 1)
        plane[(yy - c - size * 0.22) ** 2 + (xx - c) ** 2 <= spine_r**2] = BONE
    if noise:
        rng = np.random.default_rng(seed)
        jitter = rng.normal(0.0, noise, hu.shape).round().astype(np.int16)
        hu = np.clip(hu.astype(np.int32) + jitter, -1024, 3071).astype(np.int16)
    if metal:
        m = size // 2
        hu[slices // 2, m - 1 : m + 1, m - 1 : m + 1] = METAL
    return Phantom(hu, (spacing, 0.8, 0.8))


def _htj2k(frame: np.ndarray, rpcl: bool) -> bytes:
    tool = shutil.which("ojph_compress")
    if tool is None:
        raise RuntimeError("ojph_compress not found: apt-get install openjph-tools")
    with tempfile.TemporaryDirectory() as tmp:
        pgm = Path(tmp) / "frame.pgm"
        rows, cols = frame.shape
        header = f"P5\n{cols} {rows}\n65535\n".encode()
        pgm.write_bytes(header + frame.astype(">u2").tobytes())
        out = Path(tmp) / "frame.j2c"
        cmd = [tool, "-i", str(pgm), "-o", str(out), "-reversible", "true"]
        if rpcl:
            cmd += ["-prog_order", "RPCL"]
        subprocess.run(cmd, check=True, capture_output=True)
        return out.read_bytes()


def write_series(
    phantom: Phantom,
    syntax: str = "uncompressed",
    patient_id: str = "PHANTOM1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    body_part: str = "CHEST",
    description: str = "CT CHEST phantom",
) -> list[Dataset]:
    """One CT instance per slice, in the named transfer syntax (see SYNTAXES)."""
    uid = SYNTAXES[syntax]
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    stored = (phantom.hu.astype(np.int32) - INTERCEPT).astype(np.uint16)
    out: list[Dataset] = []
    dz, dy, dx = phantom.spacing
    for z in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName = patient_id, "Phantom^Test"
        ds.Modality, ds.BodyPartExamined = "CT", body_part
        ds.StudyDescription = ds.SeriesDescription = description
        ds.StudyDate, ds.StudyTime = "20260101", "120000"
        ds.SeriesNumber, ds.InstanceNumber = 1, z + 1
        ds.ImagePositionPatient = [0.0, 0.0, -100.0 + z * dz]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
        frame = stored[z]
        if syntax == "uncompressed":
            ds.PixelData = frame.tobytes()
        elif syntax.startswith("htj2k"):
            ds.PixelData = encapsulate([_htj2k(frame, syntax == "htj2k-rpcl")])
            ds["PixelData"].VR = "OB"
            meta.TransferSyntaxUID = uid
        else:
            ds.PixelData = frame.tobytes()
            plugin = "pylibjpeg" if syntax == "jpeg2000" else ""
            ds.compress(uid, frame, encoding_plugin=plugin)
        out.append(ds)
    return out
