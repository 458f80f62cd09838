"""What the served graph adds around the exported torch graph: raw named inputs in front,
probabilities and label names (or the flat regression prediction) behind.

    served = serving_graph(core_bytes, spec, label_names, extra_outputs=True)

The torch graph takes the encoded rows (``input``: FP32 ``[batch, columns]``, NaN for missing
numbers) and returns ``logits`` (``[batch, 1]``, the prediction, for regression). For a table
with categorical columns the front replaces ``input`` by one input per column (see
:func:`trainpipe.data.preprocess.serving_front`); a purely numeric table keeps the single FP32
block. For classification the back adds ``probabilities`` (softmax) and ``label`` (the
predicted class name, BYTES) as extra outputs; for regression ``prediction`` (``[batch]``, in
the target's units).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainpipe.data.datasets import Dataset
from trainpipe.data.preprocess import (
    ONNX_ML_OPSET,
    PreprocessSpec,
    encode_feeds,
    raw_feeds,
    serving_front,
)
from trainpipe.errors import ExportError
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session

PROBABILITIES = "probabilities"
LABEL = "label"
PREDICTION = "prediction"


def _ensure_ml_opset(model) -> None:
    from onnx import helper

    if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET))


def serving_graph(
    core: bytes,
    spec: PreprocessSpec | None,
    label_names: list[str],
    *,
    extra_outputs: bool,
    regression: bool = False,
) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(core)
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if spec is not None and spec.has_categorical:
        front = serving_front(spec, opset=opset, ir_version=model.ir_version, output=INPUT_NAME)
        kept = [i for i in graph.input if i.name != INPUT_NAME]
        del graph.input[:]
        graph.input.extend([*front.graph.input, *kept])
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend([*front.graph.node, *nodes])
        graph.initializer.extend(front.graph.initializer)
        _ensure_ml_opset(model)
    if extra_outputs and regression:
        graph.initializer.append(helper.make_tensor("tp_flat", TensorProto.INT64, [1], [-1]))
        graph.node.append(
            helper.make_node("Reshape", [OUTPUT_NAME, "tp_flat"], [PREDICTION], name="tp_flat")
        )
        graph.output.append(helper.make_tensor_value_info(PREDICTION, TensorProto.FLOAT, ["batch"]))
    elif extra_outputs:
        graph.node.append(
            helper.make_node("Softmax", [OUTPUT_NAME], [PROBABILITIES], axis=-1, name="tp_softmax")
        )
        graph.node.append(
            helper.make_node(
                "ArgMax", [OUTPUT_NAME], ["tp_argmax"], axis=1, keepdims=0, name="tp_argmax"
            )
        )
        graph.node.append(
            helper.make_node(
                "LabelEncoder",
                ["tp_argmax"],
                [LABEL],
                domain="ai.onnx.ml",
                name="tp_label_names",
                keys_int64s=list(range(len(label_names))),
                values_strings=list(label_names),
                default_string="",
            )
        )
        graph.output.extend(
            [
                helper.make_tensor_value_info(
                    PROBABILITIES, TensorProto.FLOAT, ["batch", len(label_names)]
                ),
                helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["batch"]),
            ]
        )
        _ensure_ml_opset(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def served_feeds(spec: PreprocessSpec | None, x: np.ndarray) -> dict[str, np.ndarray]:
    """The request a client sends for encoded rows ``x``: named raw columns, or the block."""
    if spec is not None and spec.has_categorical:
        return raw_feeds(spec, x)
    return {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}


def check_serving_graph(
    served: bytes,
    model: nn.Module,
    dataset: Dataset,
    x: np.ndarray,
    *,
    atol: float | None,
    rtol: float,
    level: str,
) -> dict:
    """Raw inputs through the whole served graph against torch on the rows they encode to:
    covers the categorical front, the preprocessing inside the graph and the extra outputs.
    ``atol`` None (an int8 graph) reports the agreement without bounding the difference."""
    session = ort_session(served, level)
    spec = dataset.preprocess
    feeds = served_feeds(spec, x)
    encoded = encode_feeds(spec, feeds) if spec is not None and spec.has_categorical else x
    with torch.inference_mode():
        expected = model.eval()(torch.as_tensor(encoded)).numpy()
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feeds), strict=True))
    logits = outputs[OUTPUT_NAME]
    max_abs = float(np.abs(logits - expected).max())
    report = {
        "examples": len(x),
        "inputs": sorted(feeds),
        "outputs": names,
        "max_abs_error": max_abs,
        "prediction_agreement": float((logits.argmax(1) == expected.argmax(1)).mean()),
    }
    if atol is not None and not np.allclose(logits, expected, atol=atol, rtol=rtol):
        raise ExportError(
            f"export error: the served graph (raw inputs {sorted(feeds)[:5]}...) differs from "
            f"torch by up to {max_abs:.2e} on {len(x)} validation rows; the preprocessing "
            "front does not encode like training did"
        )
    if LABEL in outputs:
        names_of = np.array(dataset.label_names, dtype=object)[logits.argmax(1)]
        probabilities = outputs[PROBABILITIES]
        if not (outputs[LABEL] == names_of).all() or not np.allclose(
            probabilities.sum(1), 1.0, atol=1e-4
        ):
            raise ExportError(
                "export error: the served graph's label/probabilities outputs disagree with "
                "its logits; re-run the export"
            )
    return report
