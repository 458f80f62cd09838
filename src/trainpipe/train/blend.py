"""The blend weights of a table model: how much of the linear model's prediction, and of the
gradient-boosted trees', to mix into the network's (probabilities for classification, values
for regression).

    choice = choose_blend_weight(network_pred, linear_pred, y, regression=False)
    choice.weight, choice.lowest_loss_weight, choice.losses
    choice = choose_blend_weight(network_pred, linear_pred, y, regression=False, trees=trees_pred)
    choice.weight, choice.trees_weight

Each grid weight's blended predictions are scored per row (log loss, or squared error). The
weight with the lowest mean loss is where the evidence points; the weight chosen is the *most
linear* one whose extra mean loss over it is not significant at the 5% level (one-sided paired
z-test on the same rows: at most ``EVIDENCE_Z`` standard errors of the per-row loss
differences): the simpler model unless the rows say otherwise with 95% confidence. On a few
hundred rows that keeps a confident but lucky network from outweighing a steady linear model
(per-row log losses are heavy-tailed there: one row a network gets confidently wrong moves the
mean by more than a standard error); on thousands the standard error is small and the choice is
the minimum.

With trees, the grid is every (linear, trees) pair of multiples of 0.05 summing to at most 1
(the network gets the rest). The trees' weight is the lowest-loss pair's; at that trees weight
the linear weight is chosen by the rule above (the most linear one not significantly worse),
so the network keeps only the share the rows show it earns. (Also preferring the least trees
weight not significantly worse, measured on the ``--extra`` moons table, left the linear model
at weights 0.5-0.85 where it is 8 points behind the trees: log losses of a few hundred rows
cannot tell such mixes apart, their accuracies differ by 2-3 points.)
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


def blend(
    network: np.ndarray,
    linear: np.ndarray,
    linear_weight: float,
    trees: np.ndarray | None = None,
    trees_weight: float = 0.0,
) -> np.ndarray:
    mixed = linear_weight * linear + (1.0 - linear_weight - trees_weight) * network
    return mixed if trees is None else mixed + trees_weight * trees


@dataclass(frozen=True)
class BlendChoice:
    weight: float
    """The linear weight chosen."""
    lowest_loss_weight: float
    """The grid weight with the lowest mean loss."""
    losses: dict[str, float]
    """Mean loss per grid weight (with trees: per "linear,trees" pair)."""
    rows: int
    trees_weight: float = 0.0
    """The trees' weight chosen (0 without trees)."""
    lowest_loss_trees_weight: float = 0.0


def _grid(trees: bool) -> list[tuple[float, float]]:
    if not trees:
        return [(w, 0.0) for w in BLEND_GRID]
    return [(w, t) for w in BLEND_GRID for t in BLEND_GRID if w + t <= 1.0 + 1e-9]


def choose_blend_weight(
    network: np.ndarray,
    linear: np.ndarray,
    y: np.ndarray,
    *,
    regression: bool,
    trees: np.ndarray | None = None,
) -> BlendChoice:
    """The linear (and trees') weight for predictions of the same rows (see the module doc)."""
    grid = _grid(trees is not None)
    per_row = {
        (w, t): row_losses(blend(network, linear, w, trees, t), y, regression) for w, t in grid
    }
    means = {pair: float(np.mean(v)) for pair, v in per_row.items()}
    lowest = min(means.values())
    best = min(
        (pair for pair in grid if means[pair] <= lowest),
        key=lambda pair: (pair[1], abs(pair[0] - 0.5)),
    )
    chosen = best
    # At the lowest-loss trees weight: the most linear pair not significantly worse.
    for pair in sorted((p for p in grid if p[1] == best[1]), key=lambda pair: -pair[0]):
        if pair == best:
            break
        difference = per_row[pair] - per_row[best]
        error = float(np.std(difference, ddof=1)) / math.sqrt(len(y)) if len(y) > 1 else 0.0
        if float(np.mean(difference)) <= EVIDENCE_Z * error:
            chosen = pair
            break
    key = (lambda pair: str(pair[0])) if trees is None else (lambda p: f"{p[0]},{p[1]}")
    return BlendChoice(
        weight=chosen[0],
        lowest_loss_weight=best[0],
        losses={key(pair): round(v, 6) for pair, v in means.items()},
        rows=len(y),
        trees_weight=chosen[1],
        lowest_loss_trees_weight=best[1],
    )
