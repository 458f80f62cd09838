"""How the deploy stage rolls the new champion out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section


class DeployConfig(Section):
    target: Literal["local"] = "local"
    """``local`` starts the ONNX Runtime server on a loopback port, sends a real inference
    request, checks the answer and stops it."""

    smoke_examples: int = Field(8, ge=1, le=1024)
    """Test examples sent in the smoke inference; answers must match the exported model's."""

    accuracy_tolerance: float = Field(0.01, ge=0.0, le=1.0)
    """Largest gap allowed between the served model's accuracy on the whole test split and the
    evaluate stage's on the same examples: ONNX Runtime and torch may split a near-tie
    differently. An int8 package adds the export bound it passed (``max_accuracy_drop``)."""

    latency_requests: int = Field(200, ge=1, le=100_000)
    """Single-example requests timed against the started server; p50 and p99 go to
    deploy.json."""
