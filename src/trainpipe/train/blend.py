"""The blend weight of a table model: how much of the linear model's prediction to mix into the
network's (probabilities for classification, values for regression).

    choice = choose_blend_weight(network_pred, linear_pred, y, regression=False)
    choice.weight, choice.lowest_loss_weight, choice.losses

Each grid weight's blended predictions are scored per row (log loss, or squared error). The
weight with the lowest mean loss is where the evidence points; the weight chosen is the *most
linear* one whose extra mean loss over it is not significant at the 5% level (one-sided paired
z-test on the same rows: at most ``EVIDENCE_Z`` standard errors of the per-row loss
differences): the simpler model unless the rows say otherwise with 95% confidence. On a few
hundred rows that keeps a confident but lucky network from outweighing a steady linear model
(per-row log losses are heavy-tailed there: one row a network gets confidently wrong moves the
mean by more than a standard error); on thousands the standard error is small and the choice is
the minimum.
The finetune stage passes *out-of-fold* predictions of every training row when it has them (the
ensemble's cross-fitted members and linear models fitted on the same folds), else the
validation split's predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainpipe.train.linear import row_losses

BLEND_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))
EVIDENCE_Z = 1.645
"""A weight more linear than the lowest-loss one is kept while its extra loss is at most this
many standard errors: the one-sided 95% quantile of the normal distribution. (One standard
error, 84%, let a network that wins on a hundred out-of-fold rows by chance ship: wine.)"""


def blend(network: np.ndarray, linear: np.ndarray, linear_weight: float) -> np.ndarray:
    return linear_weight * linear + (1.0 - linear_weight) * network


@dataclass(frozen=True)
class BlendChoice:
    weight: float
    """The linear weight chosen."""
    lowest_loss_weight: float
    """The grid weight with the lowest mean loss."""
    losses: dict[str, float]
    """Mean loss per grid weight."""
    rows: int


def choose_blend_weight(
    network: np.ndarray, linear: np.ndarray, y: np.ndarray, *, regression: bool
) -> BlendChoice:
    """The linear weight for predictions of the same rows (see the module doc)."""
    per_row = {w: row_losses(blend(network, linear, w), y, regression) for w in BLEND_GRID}
    means = {w: float(np.mean(v)) for w, v in per_row.items()}
    lowest = min(means.values())
    best = min((w for w in BLEND_GRID if means[w] <= lowest), key=lambda w: abs(w - 0.5))
    chosen = best
    for w in BLEND_GRID:
        if w <= best:
            continue
        difference = per_row[w] - per_row[best]
        error = float(np.std(difference, ddof=1)) / math.sqrt(len(y)) if len(y) > 1 else 0.0
        if float(np.mean(difference)) <= EVIDENCE_Z * error:
            chosen = w
    return BlendChoice(
        weight=chosen,
        lowest_loss_weight=best,
        losses={str(w): round(v, 6) for w, v in means.items()},
        rows=len(y),
    )
