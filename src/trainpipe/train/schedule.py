"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr``).

Being pure, a resumed run needs only the step to continue the schedule exactly.
"""

from __future__ import annotations

import math

ONE_CYCLE_START_FACTOR = 25.0  # one-cycle starts at peak/25 (Smith & Topin's default)
ONE_CYCLE_END_FACTOR = 1e4  # and anneals to peak/1e4
ONE_CYCLE_RISE_FRACTION = 0.3


def get_lr(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    steps_per_epoch: int = 1,
    step_every_epochs: int = 10,
    step_gamma: float = 0.1,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    constant/step/cosine/linear: linear warmup from zero over ``warmup_steps``, then constant,
    a step decay every ``step_every_epochs``, or cosine/linear decay to zero at ``total_steps``.
    one_cycle: rise from peak/25 to peak over 30% of training, cosine down to peak/1e4.
    """
    if schedule == "one_cycle":
        rise = max(1, int(ONE_CYCLE_RISE_FRACTION * total_steps))
        start, end = peak_lr / ONE_CYCLE_START_FACTOR, peak_lr / ONE_CYCLE_END_FACTOR
        if step < rise:
            return start + (peak_lr - start) * 0.5 * (1 - math.cos(math.pi * step / rise))
        progress = min(1.0, (step - rise) / max(1, total_steps - rise))
        return end + (peak_lr - end) * 0.5 * (1 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak_lr
    if schedule == "step":
        return peak_lr * step_gamma ** (step // (steps_per_epoch * step_every_epochs))
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return peak_lr * (1.0 - progress)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
