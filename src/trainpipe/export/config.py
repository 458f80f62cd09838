"""ONNX export and its parity check."""

from __future__ import annotations

from pydantic import Field

from trainpipe.configbase import Section


class ExportConfig(Section):
    opset: int = Field(18, ge=13, le=23)
    """ONNX opset version of the exported graph."""

    parity_atol: float = Field(1e-4, gt=0.0)
    """Largest absolute difference allowed between ONNX Runtime and torch outputs."""

    parity_rtol: float = Field(1e-3, ge=0.0)
    """Relative tolerance added on top of ``parity_atol`` (numpy.allclose semantics)."""

    parity_batch_size: int = Field(256, ge=1)
    """Validation examples compared between ONNX Runtime and torch."""
