"""``model.json``: what a client and the server need to know about an exported model.

The server reads name, version, platform, inputs, outputs, labels, sha256, opset and
graph_optimization_level; the rest (preprocessing, quantization, parity, timings, tool versions)
is for people and for the deploy stage's checks.
"""

from __future__ import annotations

from trainpipe.data.config import BUILTIN_DIGITS
from trainpipe.data.datasets import Dataset
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from trainpipe.storage import sha256_bytes


def preprocessing(dataset: Dataset) -> dict:
    """How raw examples become the float32 input tensor (the graph does nothing before this)."""
    shape = list(dataset.feature_shape)
    if dataset.source == BUILTIN_DIGITS:
        description = (
            "scikit-learn 8x8 handwritten digits: pixel intensities 0..16 divided by 16 "
            "(float32 in 0..1), one channel, layout [1, 8, 8]"
        )
    elif dataset.feature_names:
        description = (
            f"feature columns {dataset.feature_names} of {dataset.source} cast to float32 in "
            f"this order, reshaped to {shape}; no scaling"
        )
    else:
        description = f"array 'x' of {dataset.source} cast to float32, shape {shape}; no scaling"
    return {
        "description": description,
        "dtype": "float32",
        "feature_shape": shape,
        "feature_names": list(dataset.feature_names),
        "source": dataset.source,
    }


def model_metadata(
    *,
    name: str,
    version: str,
    dataset: Dataset,
    onnx_bytes: bytes,
    opset: int,
    quantized: bool,
    graph_optimization: dict,
    parity: dict,
    quantization: dict | None,
) -> dict:
    import onnx
    import onnxruntime
    import torch

    return {
        "name": name,
        "version": version,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *dataset.feature_shape]}],
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(dataset.label_names)]}
        ],
        "labels": list(dataset.label_names),
        "sha256": sha256_bytes(onnx_bytes),
        "opset": opset,
        "preprocessing": preprocessing(dataset),
        "quantized": quantized,
        "graph_optimization_level": graph_optimization["chosen"],
        "graph_optimization": graph_optimization,
        "parity": parity,
        "quantization": quantization,
        "exported_with": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
