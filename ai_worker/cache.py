"""Decoded volumes handed from the decode queue to the inference queue, as .npy files.

A 200-slice CT is ~100 MB of int16 voxels: too big for a Redis message, so the decode stage writes
it under INTEROP_AI_CACHE_DIR (shared storage when decoding and inference run on different
hosts) and the inference stage reads it and deletes it. A missing file just means the decode
stage runs again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ai_worker.pixels.volume import Volume


class VolumeCache:
    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)

    def _paths(self, key: str) -> tuple[Path, Path]:
        safe = "".join(c for c in key if c.isalnum() or c in "-_.")
        return self.dir / f"{safe}.npy", self.dir / f"{safe}.json"

    def save(self, key: str, volume: Volume) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data, meta = self._paths(key)
        tmp = data.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, volume.voxels, allow_pickle=False)
        os.replace(tmp, data)
        meta.write_text(
            json.dumps(
                {
                    "spacing": volume.spacing,
                    "origin": volume.origin,
                    "normal": volume.normal,
                    "series_uid": volume.series_uid,
                    "modality": volume.modality,
                    "sop_uids": volume.sop_uids,
                    "transfer_syntaxes": sorted(volume.transfer_syntaxes),
                    "attributes": volume.attributes,
                }
            )
        )

    def load(self, key: str) -> Volume | None:
        data, meta = self._paths(key)
        if not (data.is_file() and meta.is_file()):
            return None
        info = json.loads(meta.read_text())
        return Volume(
            voxels=np.load(data, allow_pickle=False),
            spacing=tuple(info["spacing"]),
            origin=tuple(info["origin"]),
            normal=tuple(info["normal"]),
            series_uid=info["series_uid"],
            modality=info["modality"],
            sop_uids=info["sop_uids"],
            transfer_syntaxes=set(info["transfer_syntaxes"]),
            attributes=info["attributes"],
        )

    def drop(self, key: str) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)
