"""Dynamic int8 quantization and what it costs and buys, measured on validation data.

    int8 = quantize_dynamic_int8(fp32_bytes)
    report = compare_quantized(fp32_bytes, int8_bytes, x_val, y_val, levels=("all", "all"),
                               timing_batch_size=64, rounds=7)
    report["accuracy_drop"], report["speedup"]

Weights become int8 once; activations are quantized per call from their observed range, so no
calibration data is needed. Accuracy is counted in whole examples to avoid float round-off
deciding a bound.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from trainpipe.export.onnx_export import ort_logits, ort_session
from trainpipe.export.optimize import summarize, time_sessions


def quantize_dynamic_int8(onnx_bytes: bytes) -> bytes:
    """ONNX Runtime's recommended path: quant_pre_process (shape inference, basic graph
    optimization), then quantize_dynamic with int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_logger = logging.getLogger("onnxruntime.quantization")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_bytes)
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)  # progress chatter, not problems
        try:
            quant_pre_process(str(fp32), str(prepared))
            quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8)
        finally:
            quant_logger.setLevel(level)
        return int8.read_bytes()


def compare_quantized(
    fp32_bytes: bytes,
    int8_bytes: bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    levels: tuple[str, str],
    timing_batch_size: int,
    rounds: int,
    batch_size: int = 256,
) -> dict:
    """Accuracy of both graphs on (x, y), and their speed at batch 1 and ``timing_batch_size``.

    ``levels`` are the (fp32, int8) graph optimization levels each would be served with.
    """
    sessions = {
        "fp32": ort_session(fp32_bytes, levels[0]),
        "int8": ort_session(int8_bytes, levels[1]),
    }
    fp32_logits = ort_logits(sessions["fp32"], x, batch_size)
    int8_logits = ort_logits(sessions["int8"], x, batch_size)
    correct_fp32 = int((fp32_logits.argmax(1) == y).sum())
    correct_int8 = int((int8_logits.argmax(1) == y).sum())
    latency: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    speedup: dict[str, float] = {}
    for rows in sorted({1, min(timing_batch_size, len(x))}):
        median, _ = summarize(time_sessions(sessions, x[:rows], rounds)[0])
        for name in sessions:
            latency[name][f"batch_{rows}"] = round(median[name], 4)
        speedup[f"batch_{rows}"] = round(median["fp32"] / median["int8"], 3)
    return {
        "method": "onnxruntime dynamic int8 (QInt8 weights, per-tensor)",
        "examples": len(x),
        "accuracy_fp32": correct_fp32 / len(x),
        "accuracy_int8": correct_int8 / len(x),
        "accuracy_drop": (correct_fp32 - correct_int8) / len(x),
        "prediction_agreement": float((fp32_logits.argmax(1) == int8_logits.argmax(1)).mean()),
        "max_abs_error_vs_fp32": float(np.abs(fp32_logits - int8_logits).max()),
        "graph_optimization_levels": {"fp32": levels[0], "int8": levels[1]},
        "latency_ms": latency,
        "speedup": speedup,
        "bytes": {"fp32": len(fp32_bytes), "int8": len(int8_bytes)},
    }
