"""The promotion gate: what a model must reach before it is registered and deployed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section


class GateConfig(Section):
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    """Primary metric on the test split that the gate compares."""

    min_value: float = Field(0.85, ge=0.0, le=1.0)
    """The primary metric must reach at least this value."""
