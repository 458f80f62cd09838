"""ONNX export, its parity check, optional int8 quantization and the optimization-level choice."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class ExportConfig(Section):
    opset: int = Field(18, ge=13, le=23)
    """ONNX opset version of the exported graph."""

    parity_atol: float = Field(1e-4, gt=0.0)
    """Largest absolute difference allowed between ONNX Runtime and torch outputs."""

    parity_rtol: float = Field(1e-3, ge=0.0)
    """Relative tolerance added on top of ``parity_atol`` (numpy.allclose semantics)."""

    parity_batch_size: int = Field(256, ge=1)
    """Validation rows per ONNX Runtime / torch call in the parity check."""

    parity_max_examples: int | None = Field(None, ge=1)
    """Validation examples compared with torch; None compares the whole validation split."""

    extra_outputs: bool = True
    """Classification graphs also return ``probabilities`` (softmax, FP32 [N, classes]) and
    ``label`` (the predicted class name, BYTES [N]) besides ``logits``."""

    quantize: Literal["none", "dynamic_int8"] = "none"
    """``dynamic_int8`` ships ONNX Runtime's dynamic int8 quantization (int8 weights,
    activations quantized per call) if it keeps accuracy within ``max_accuracy_drop``. Whether it
    is faster depends on model and CPU: it tends to help transformers and wide layers, and makes
    CNNs and tiny models slower on CPUs without VNNI; model.json records the measured speed."""

    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)
    """Largest validation-accuracy loss int8 may cost against the fp32 graph (0.01 = one
    percentage point)."""

    on_accuracy_drop: Literal["fail", "fp32"] = "fail"
    """What happens when int8 loses more than ``max_accuracy_drop``: ``fail`` stops the stage,
    ``fp32`` ships the fp32 graph and records why in model.json."""

    graph_optimization_level: Literal["measure", "disable", "basic", "extended", "all"] = "measure"
    """ONNX Runtime graph optimization level recorded for the server. ``measure`` times a
    session at every level on a validation batch and picks the fastest within noise."""

    timing_batch_size: int = Field(64, ge=1)
    """Validation rows per timed call; 64 is the server's default max_batch_size, the batch its
    dynamic batching forms under load."""

    timing_rounds: int = Field(7, ge=3, le=100)
    """Interleaved timing rounds per candidate (each about 20 ms of calls); the median round
    counts."""

    timing_noise: float = Field(0.05, ge=0.0, lt=1.0)
    """Relative difference below which two timings count as equal; a larger measured spread
    between rounds widens it. Among equals the higher optimization level wins."""
