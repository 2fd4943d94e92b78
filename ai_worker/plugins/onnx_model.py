"""Any ONNX classification model named in configuration, run with ONNX Runtime.

An operator declares each model (INTEROP_AI_ONNX_MODELS, a JSON list): the file, the
preprocessing it was trained with (window, resize, normalise), and its label map. Slices go
in as a (N, 1, H, W) float32 batch; the per-slice class scores are averaged (or maxed) into
one study-level answer. The file must be local: nothing is fetched from a model hub.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ai_worker.errors import BadInput
from ai_worker.pixels.volume import Volume
from ai_worker.plugins.base import (
    INTEROP_AI,
    CodedFinding,
    Coding,
    Findings,
    Measurement,
    StudyInfo,
)


class Label(BaseModel):
    code: str
    display: str = ""
    system: str = INTEROP_AI
    flag: str | None = None  # e.g. "A": this label is an abnormal finding


class OnnxModelConfig(BaseModel):
    name: str
    version: str = "1"
    path: str
    manufacturer: str = "unknown"
    description: str = "ONNX model (not validated for clinical use unless stated)"
    modalities: list[str] = Field(default_factory=lambda: ["CT"])
    body_parts: list[str] = Field(default_factory=list, description="empty: any")
    window: tuple[float, float] | None = Field(default=None, description="(center, width)")
    size: tuple[int, int] | None = Field(default=None, description="(rows, columns)")
    mean: float = 0.0
    std: float = 1.0
    slices: Literal["all", "middle"] = "all"
    aggregate: Literal["mean", "max"] = "mean"
    output: Literal["softmax", "sigmoid", "probabilities"] = "softmax"
    labels: list[Label | str]

    def label(self, index: int) -> Label:
        item = self.labels[index]
        return item if isinstance(item, Label) else Label(code=item, display=item)


def resize(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) to (N, rows, cols), pixel centres aligned."""
    n, h, w = images.shape
    if (h, w) == (rows, cols):
        return images
    y = np.clip((np.arange(rows) + 0.5) * h / rows - 0.5, 0, h - 1)
    x = np.clip((np.arange(cols) + 0.5) * w / cols - 0.5, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0)[None, :, None], (x - x0)[None, None, :]
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def preprocess(volume: np.ndarray, config: OnnxModelConfig) -> np.ndarray:
    """Volume (Z, H, W) in modality units to the model's (N, 1, H', W') float32 input."""
    images = volume if config.slices == "all" else volume[volume.shape[0] // 2][None]
    images = images.astype(np.float32)
    if config.window is not None:
        center, width = config.window
        images = np.clip((images - (center - width / 2)) / width, 0.0, 1.0)
    if config.size is not None:
        images = resize(images, *config.size)
    images = (images - np.float32(config.mean)) / np.float32(config.std)
    return images[:, None].astype(np.float32)


class OnnxPlugin:
    modalities: frozenset[str]

    def __init__(self, config: OnnxModelConfig) -> None:
        import onnxruntime as ort

        if not Path(config.path).is_file():
            raise FileNotFoundError(f"ONNX model {config.name}: no file at {config.path}")
        self.config = config
        self.name, self.version = config.name, config.version
        self.manufacturer, self.description = config.manufacturer, config.description
        self.modalities = frozenset(config.modalities)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one job per worker process; processes scale out
        self.session = ort.InferenceSession(config.path, options, providers=_providers())
        self.input = self.session.get_inputs()[0]

    def accepts(self, study: StudyInfo) -> bool:
        if not self.modalities & study.modalities:
            return False
        wanted = {b.upper() for b in self.config.body_parts}
        return not wanted or bool(wanted & study.body_sites)

    def scores(self, volume: Volume) -> np.ndarray:
        """Per-class study-level scores (probabilities)."""
        batch = preprocess(volume.voxels, self.config)
        fixed_batch = isinstance(self.input.shape[0], int) and self.input.shape[0] == 1
        try:
            if fixed_batch:
                outputs = [self.session.run(None, {self.input.name: x[None]})[0] for x in batch]
                logits = np.concatenate(outputs)
            else:
                logits = self.session.run(None, {self.input.name: batch})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BadInput(f"model {self.name} rejected the input: {exc}") from exc
        logits = np.asarray(logits, dtype=np.float64).reshape(len(batch), -1)
        if logits.shape[1] != len(self.config.labels):
            raise BadInput(
                f"model {self.name} gives {logits.shape[1]} scores for "
                f"{len(self.config.labels)} labels"
            )
        if self.config.output == "softmax":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        elif self.config.output == "sigmoid":
            probs = 1 / (1 + np.exp(-logits))
        else:
            probs = logits
        result: np.ndarray = probs.mean(axis=0) if self.config.aggregate == "mean" else probs.max(0)
        return result

    def run(self, volume: Volume, study: StudyInfo) -> Findings:
        if volume.modality not in self.modalities:
            raise BadInput(f"{self.name} takes {sorted(self.modalities)}, not {volume.modality}")
        probs = self.scores(volume)
        best = int(np.argmax(probs))
        label = self.config.label(best)
        coding = Coding(label.system, label.code, label.display)
        measurements = []
        for i, p in enumerate(probs):
            item = self.config.label(i)
            code = Coding(INTEROP_AI, f"{self.name}/p/{item.code}",
                          f"probability of {item.display or item.code}")  # fmt: skip
            measurements.append(Measurement(code, round(float(p) * 100, 3), "%"))
        finding = CodedFinding(
            Coding(INTEROP_AI, f"{self.name}/class", f"{self.name} classification"),
            coding,
            flag=label.flag,
            note=f"p={float(probs[best]):.4f}",
        )
        return Findings(
            measurements=measurements,
            coded=[finding],
            impression=(
                f"{self.name} {self.version}: {label.display or label.code} "
                f"(probability {float(probs[best]) * 100:.1f}%)."
            ),
            conclusion_codes=[coding],
        )


def _providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def provide(settings: Any) -> Iterable[OnnxPlugin]:
    """Entry point `interop.models`: one plugin per model in INTEROP_AI_ONNX_MODELS."""
    return [OnnxPlugin(OnnxModelConfig.model_validate(c)) for c in settings.ai_onnx_models]
