"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr``)."""

from __future__ import annotations

import math


def get_lr(
    step: int, *, peak_lr: float, total_steps: int, warmup_steps: int, schedule: str
) -> float:
    """Linear warmup to ``peak_lr``, then constant, linear or cosine decay to zero."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return peak_lr * (1.0 - progress)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
