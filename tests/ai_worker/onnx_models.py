"""Tiny ONNX models the tests build themselves (nothing comes from a model hub)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS = np.array([[4.0, -4.0]], dtype=np.float32)
BIAS = np.array([-1.0, 1.0], dtype=np.float32)


def mean_classifier(path: Path) -> Path:
    """logits = mean(slice) * WEIGHTS + BIAS for each slice of a (N, 1, H, W) batch."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m2"]),
        helper.make_node("MatMul", ["m2", "w"], ["mw"]),
        helper.make_node("Add", ["mw", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_classifier",
        [x],
        [y],
        initializer=[
            numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "shape"),
            numpy_helper.from_array(WEIGHTS, "w"),
            numpy_helper.from_array(BIAS, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected_probabilities(batch: np.ndarray) -> np.ndarray:
    """What mean_classifier + softmax + mean aggregation give, in numpy."""
    means = batch.reshape(len(batch), -1).mean(axis=1, dtype=np.float64)[:, None]
    logits = means * WEIGHTS.astype(np.float64) + BIAS
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    return probs
