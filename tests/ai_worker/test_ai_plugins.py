"""Model plugins: the classical CT analysis and the ONNX plugin, against generated volumes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from onnx_models import expected_probabilities, mean_classifier

from ai_worker.errors import BadInput
from ai_worker.phantom import BONE, FAT, LUNG, METAL, SOFT, make_phantom
from ai_worker.pixels.volume import Volume
from ai_worker.plugins import Registry, StudyInfo
from ai_worker.plugins.ct_classical import CtClassicalPlugin
from ai_worker.plugins.onnx_model import OnnxModelConfig, OnnxPlugin, preprocess, resize
from interop.settings import Settings

STUDY = StudyInfo("s1", "1.2.3", "Patient/p1", frozenset({"CT"}), frozenset({"CHEST"}), "CT")


def volume_of(hu: np.ndarray, spacing: tuple[float, float, float]) -> Volume:
    uids = [f"1.2.{i}" for i in range(len(hu))]
    return Volume(hu.astype(np.float32), spacing, (0, 0, 0), (0, 0, 1), "9.9", "CT", uids)


def by_code(findings, code: str):  # type: ignore[no-untyped-def]
    items = [*findings.measurements, *findings.coded]
    return next(f for f in items if f.code.code == code)


def test_classical_volumes_match_the_phantom() -> None:
    phantom = make_phantom(slices=8, size=48)
    findings = CtClassicalPlugin().run(volume_of(phantom.hu, phantom.spacing), STUDY)
    assert by_code(findings, "fat-volume").value == pytest.approx(phantom.ml(FAT), abs=1e-3)
    assert by_code(findings, "soft-tissue-volume").value == pytest.approx(
        phantom.ml(SOFT), abs=1e-3
    )
    assert by_code(findings, "bone-volume").value == pytest.approx(phantom.ml(BONE), abs=1e-3)
    assert by_code(findings, "air-volume").value == pytest.approx(phantom.ml(LUNG), abs=1e-3)
    body = phantom.ml(FAT) + phantom.ml(SOFT) + phantom.ml(BONE) + phantom.ml(LUNG)
    assert by_code(findings, "body-volume").value == pytest.approx(body, abs=1e-3)
    assert by_code(findings, "soft-tissue-mean").value == pytest.approx(SOFT)
    assert by_code(findings, "body-volume").unit == "mL"
    assert by_code(findings, "body-region").value.code == "51185008"  # chest: it has lungs
    assert (
        by_code(findings, "outlier-volume").value == 0
        and not by_code(findings, "outlier-volume").flag
    )
    assert "No intensity outlier" in findings.impression
    assert findings.key_image is not None and findings.key_image.png.startswith(b"\x89PNG")


def test_classical_flags_metal_as_an_intensity_outlier() -> None:
    phantom = make_phantom(slices=8, size=48, metal=True)
    findings = CtClassicalPlugin().run(volume_of(phantom.hu, phantom.spacing), STUDY)
    outlier = by_code(findings, "intensity-outlier")
    assert outlier.flag == "A"
    assert by_code(findings, "outlier-volume").value == pytest.approx(phantom.ml(METAL))
    assert by_code(findings, "outlier-volume").flag == "H"
    assert findings.key_image is not None
    assert findings.key_image.sop_uid == "1.2.4"  # the slice with the metal


def test_classical_is_honest_and_refuses_non_ct() -> None:
    plugin = CtClassicalPlugin()
    assert "NOT A DIAGNOSTIC DEVICE" in plugin.description
    mr = Volume(np.zeros((2, 4, 4), np.float32), (1, 1, 1), (0, 0, 0), (0, 0, 1), "x", "MR", [])
    with pytest.raises(BadInput):
        plugin.run(mr, STUDY)
    air = volume_of(np.full((2, 8, 8), -1000, np.int16), (1, 1, 1))
    with pytest.raises(BadInput, match="no body"):
        plugin.run(air, STUDY)


def test_key_image_is_a_valid_png() -> None:
    phantom = make_phantom(slices=4, size=32)
    png = CtClassicalPlugin().run(volume_of(phantom.hu, phantom.spacing), STUDY).key_image
    assert png is not None
    data = png.png
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (32, 32)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == 32 * 33


def test_resize_is_bilinear() -> None:
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert resize(img, 4, 4) is img
    small = resize(img, 2, 2)
    assert small.shape == (1, 2, 2)
    assert small[0, 0, 0] == pytest.approx(img[0, :2, :2].mean())


def onnx_config(tmp_path: Path, **extra) -> OnnxModelConfig:  # type: ignore[no-untyped-def]
    path = mean_classifier(tmp_path / "model.onnx")
    return OnnxModelConfig.model_validate(
        {
            "name": "mean-net",
            "version": "0.1",
            "path": str(path),
            "window": [40, 400],
            "size": [16, 16],
            "mean": 0.5,
            "std": 0.25,
            "labels": [
                {"code": "normal", "display": "Normal"},
                {"code": "dense", "display": "Dense", "flag": "A"},
            ],
        }
        | extra
    )


def test_onnx_plugin_matches_numpy(tmp_path: Path) -> None:
    config = onnx_config(tmp_path)
    plugin = OnnxPlugin(config)
    phantom = make_phantom(slices=5, size=32)
    volume = volume_of(phantom.hu, phantom.spacing)
    expected = expected_probabilities(preprocess(volume.voxels, config))
    findings = plugin.run(volume, STUDY)
    probs = [m.value / 100 for m in findings.measurements]
    assert probs == pytest.approx(list(expected), abs=1e-4)
    best = int(np.argmax(expected))
    assert findings.coded[0].value.code == ["normal", "dense"][best]
    assert findings.coded[0].flag == (None, "A")[best]
    assert findings.measurements[0].unit == "%"


def test_onnx_plugin_accepts_by_modality_and_body_part(tmp_path: Path) -> None:
    plugin = OnnxPlugin(onnx_config(tmp_path, body_parts=["HEAD"]))
    assert not plugin.accepts(STUDY)
    plugin = OnnxPlugin(onnx_config(tmp_path, body_parts=["chest"]))
    assert plugin.accepts(STUDY)


def test_onnx_label_count_mismatch_is_bad_input(tmp_path: Path) -> None:
    plugin = OnnxPlugin(onnx_config(tmp_path, labels=["a", "b", "c"]))
    phantom = make_phantom(slices=2, size=16)
    with pytest.raises(BadInput, match="3 labels"):
        plugin.run(volume_of(phantom.hu, phantom.spacing), STUDY)


def test_registry_loads_entry_points_and_configured_onnx(tmp_path: Path) -> None:
    config = onnx_config(tmp_path)
    settings = Settings(ai_onnx_models=[config.model_dump()])
    registry = Registry.load(settings)
    assert {"ct-classical", "mean-net"} <= set(registry.plugins)
    with pytest.raises(BadInput, match="installed: ct-classical"):
        registry.get("nope")
