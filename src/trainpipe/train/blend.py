"""The blend weight of a table model: how much of the linear model's prediction to mix into the
network's (probabilities for classification, values for regression).

    weight, losses = choose_blend_weight(network_pred, linear_pred, y, regression=False)

The weight is the grid point with the lowest loss (log loss, or mean squared error) of the
blended predictions. The finetune stage passes *out-of-fold* predictions of every training row
when it has them (the ensemble's cross-fitted members and linear models fitted on the same
folds: hundreds of rows where a small table's validation split has dozens), else the validation
split's predictions. An exact tie goes to the weight nearest an even blend.
"""

from __future__ import annotations

import numpy as np

from trainpipe.train.linear import prediction_loss

BLEND_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))


def blend(network: np.ndarray, linear: np.ndarray, linear_weight: float) -> np.ndarray:
    return linear_weight * linear + (1.0 - linear_weight) * network


def choose_blend_weight(
    network: np.ndarray, linear: np.ndarray, y: np.ndarray, *, regression: bool
) -> tuple[float, dict[str, float]]:
    """(linear weight, loss per grid weight) for predictions of the same rows."""
    losses = {w: prediction_loss(blend(network, linear, w), y, regression) for w in BLEND_GRID}
    lowest = min(losses.values())
    tied = [w for w, loss in losses.items() if loss <= lowest]
    weight = min(tied, key=lambda w: abs(w - 0.5))
    return weight, {str(w): round(loss, 6) for w, loss in losses.items()}
