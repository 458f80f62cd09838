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
