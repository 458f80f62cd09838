"""Torch -> ONNX with a dynamic batch axis, one self-contained file, checked against torch.

onnx_bytes = export_onnx(model, input_shape=[1, 8, 8], opset=18)
parity = check_parity(onnx_bytes, model, batch, atol=1e-4, rtol=1e-3)
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainpipe.errors import ExportError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# The exporter logs one warning per torchvision op it cannot register; we use none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_onnx(model: nn.Module, input_shape: list[int], opset: int) -> bytes:
    """Export ``model`` in eval mode; batch size stays dynamic, weights are embedded."""
    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about internal fallbacks
        path = Path(tmp) / "model.onnx"
        # dynamo=True is 2.13's default exporter; without dynamic_shapes it bakes the batch size
        # in, and external_data=False keeps weights inside the one file we ship.
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        return path.read_bytes()


def ort_session(onnx_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def check_parity(
    onnx_bytes: bytes, model: nn.Module, batch: np.ndarray, *, atol: float, rtol: float
) -> dict:
    """Run ONNX Runtime and torch on the same batch; raise ExportError beyond tolerance."""
    with torch.inference_mode():
        expected = model.eval().cpu()(torch.as_tensor(batch)).numpy()
    actual = ort_session(onnx_bytes).run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    abs_error = np.abs(actual - expected)
    max_abs = float(abs_error.max())
    max_rel = float((abs_error / (np.abs(expected) + 1e-12)).max())
    agree = float((actual.argmax(1) == expected.argmax(1)).mean())
    report = {
        "examples": len(batch),
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "prediction_agreement": agree,
        "atol": atol,
        "rtol": rtol,
    }
    if not np.allclose(actual, expected, atol=atol, rtol=rtol):
        raise ExportError(
            f"export error: ONNX Runtime differs from torch by up to {max_abs:.2e} (abs) on "
            f"{len(batch)} validation examples, beyond atol={atol} rtol={rtol}; check the model "
            "for ops the exporter changes, or raise export.parity_atol"
        )
    return report
