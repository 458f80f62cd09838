"""``model.json``: what a client and the server need to know about an exported model.

The server reads name, version, platform, inputs, outputs, labels, sha256, opset and
graph_optimization_level; the rest (preprocessing, quantization, parity, timings, tool versions)
is for people and for the deploy stage's checks.
"""

from __future__ import annotations

from trainpipe.data.config import BUILTIN_DIGITS
from trainpipe.data.datasets import Dataset
from trainpipe.data.preprocess import input_datatype
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from trainpipe.export.serving_graph import LABEL, PREDICTION, PROBABILITIES
from trainpipe.storage import sha256_bytes


def preprocessing(dataset: Dataset) -> dict:
    """How raw examples become the model's input, and what the graph itself does with them."""
    shape = list(dataset.feature_shape)
    spec = dataset.preprocess
    if spec is not None:
        served = (
            "one named input per column (numbers FP32 with NaN/null for missing, strings "
            "BYTES, integers INT64, booleans BOOL)"
            if spec.has_categorical
            else f"one FP32 block 'input' [N, {len(spec.columns)}], columns in this order, "
            "NaN/null for missing"
        )
        return {
            "description": (
                f"raw table rows of {dataset.source}: {served}; the graph imputes missing "
                "numbers with the training median (plus a missing indicator), scales them "
                "robustly (median, interquartile range, clipped), and one-hot encodes "
                "categories with a reserved bucket for unseen values, all fitted on the "
                "training split"
            ),
            "dtype": "float32",
            "feature_shape": shape,
            "feature_names": list(dataset.feature_names),
            "source": dataset.source,
            "columns": spec.describe(),
            "spec": spec.to_dict(),
        }
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


def input_specs(dataset: Dataset) -> list[dict]:
    """Named raw columns for tables with categories, else one block (tables: NaN = missing)."""
    spec = dataset.preprocess
    if spec is not None and spec.has_categorical:
        return [
            {
                "name": c.name,
                "datatype": input_datatype(c),
                "shape": [-1],
                **({"allow_missing": True} if c.kind == "numeric" else {}),
            }
            for c in spec.columns
        ]
    block = {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *dataset.feature_shape]}
    if spec is not None:
        block["allow_missing"] = True
    return [block]


def output_specs(
    label_names: list[str], extra_outputs: bool, regression: bool = False
) -> list[dict]:
    if regression:
        outputs = [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 1]}]
        if extra_outputs:
            outputs.append({"name": PREDICTION, "datatype": "FP32", "shape": [-1]})
        return outputs
    classes = len(label_names)
    outputs = [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes]}]
    if extra_outputs:
        outputs += [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, classes]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ]
    return outputs


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
    extra_outputs: bool = False,
    blend: dict | None = None,
    training: dict | None = None,
) -> dict:
    """``blend``: the linear weight of a table model's blend and how it was chosen (None: the
    network alone); ``training``: the schedule the shipped network was fine-tuned with
    (effective batch size, steps, epochs; None for models saved without it)."""
    import onnx
    import onnxruntime
    import torch

    return {
        "name": name,
        "version": version,
        "platform": "onnxruntime_onnx",
        "inputs": input_specs(dataset),
        "outputs": output_specs(dataset.label_names, extra_outputs, dataset.regression),
        "task": dataset.task,
        "labels": list(dataset.label_names),
        "sha256": sha256_bytes(onnx_bytes),
        "opset": opset,
        "preprocessing": preprocessing(dataset),
        "quantized": quantized,
        "graph_optimization_level": graph_optimization["chosen"],
        "graph_optimization": graph_optimization,
        "parity": parity,
        "quantization": quantization,
        "blend": blend,
        "training": training,
        "exported_with": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
