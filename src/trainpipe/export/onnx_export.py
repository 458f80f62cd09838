"""Torch -> ONNX with a dynamic batch axis, one self-contained file, checked against torch.

    onnx_bytes = export_onnx(model, input_shape=[1, 8, 8], opset=18)
    parity = check_parity(onnx_bytes, model, validation_x, atol=1e-4, rtol=1e-3, batch_size=256)

Every ONNX Runtime session here is built with the server's own session options
(``trainpipe.serve.model.session_options``), so parity and timings describe what is served.
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
# The graph optimizer's passes log every rewrite at INFO (one line per deduplicated
# initializer); a component's root logger is at INFO, so they would fill the run's console.
for _name in ("onnxscript", "onnx_ir"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def export_onnx(model: nn.Module, input_shape: list[int], opset: int) -> bytes:
    """Export ``model`` in eval mode; batch size stays dynamic, weights are embedded."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    return _export(model, torch.zeros(2, *input_shape), {0: batch}, opset)


def export_token_onnx(model: nn.Module, max_seq_len: int, opset: int) -> bytes:
    """Export a model over token ids (``[batch, seq]`` int64) with batch and sequence length
    both dynamic (sequence 2..``max_seq_len``), for text models."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    seq = torch.export.Dim("seq", min=2, max=max_seq_len)
    # Not zeros: an all-padding example would trace the padding-only path of masked models.
    example = torch.ones(2, min(8, max_seq_len), dtype=torch.int64)
    return _export(model, example, {0: batch, 1: seq}, opset)


def _export(model: nn.Module, example: torch.Tensor, dynamic: dict, opset: int) -> bytes:
    model = model.eval().cpu()
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
            dynamic_shapes=(dynamic,),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        return path.read_bytes()


def ort_session(onnx_bytes: bytes, level: str = "all"):
    """An ONNX Runtime session configured exactly as the server configures its own."""
    import onnxruntime as ort

    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.model import session_options

    options = session_options(ServeConfig(graph_optimization_level=level))
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def ort_logits(session, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
    )


def relative_error(actual: np.ndarray, expected: np.ndarray, atol: float) -> float:
    """Largest |actual - expected| / |expected| over elements with |expected| > atol.

    Elements closer to zero than ``atol`` are what the absolute bound is for; dividing by them
    would report noise around zero as huge relative errors.
    """
    significant = np.abs(expected) > atol
    if not significant.any():
        return 0.0
    return float((np.abs(actual - expected)[significant] / np.abs(expected[significant])).max())


def check_parity(
    onnx_bytes: bytes,
    model: nn.Module,
    x: np.ndarray,
    *,
    atol: float,
    rtol: float,
    batch_size: int = 256,
    level: str = "all",
) -> dict:
    """Compare ONNX Runtime with torch on every row of ``x``; raise ExportError beyond tolerance."""
    model = model.eval().cpu()
    session = ort_session(onnx_bytes, level)
    max_abs = max_rel = 0.0
    agree = 0
    within = True
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        with torch.inference_mode():
            expected = model(torch.as_tensor(batch)).numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        max_abs = max(max_abs, float(np.abs(actual - expected).max()))
        max_rel = max(max_rel, relative_error(actual, expected, atol))
        agree += int((actual.argmax(1) == expected.argmax(1)).sum())
        within = within and bool(np.allclose(actual, expected, atol=atol, rtol=rtol))
    report = {
        "examples": len(x),
        "batches": -(-len(x) // batch_size),
        "batch_size": batch_size,
        "graph_optimization_level": level,
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "prediction_agreement": agree / len(x),
        "atol": atol,
        "rtol": rtol,
    }
    if not within:
        raise ExportError(
            f"export error: ONNX Runtime differs from torch by up to {max_abs:.2e} (abs, "
            f"{max_rel:.2e} rel) on {len(x)} validation examples, beyond atol={atol} "
            f"rtol={rtol}; check the model for ops the exporter changes, or raise "
            "export.parity_atol"
        )
    return report
