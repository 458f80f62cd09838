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
(the network gets the rest). The simpler mix, the network/linear weight above (trees weight 0),
ships unless the lowest-loss pair beats it by more than ``TREES_EVIDENCE_Z`` standard errors
(one-sided 1%); then the trees' weight is the lowest-loss pair's and the linear weight at it is
chosen by the rule above. (Measured, session 4: preferring instead the least trees weight not
significantly worse left the linear model at weights 0.5-0.85 on the ``--extra`` moons table,
where it is 8 points behind the trees: log losses of a few hundred rows cannot tell such mixes
apart, their accuracies differ by 2-3 points.)
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

TREES_EVIDENCE_Z = 2.326
"""Trees join the blend when the lowest-loss pair's mean loss is more than this many standard
errors below the network/linear choice's: the one-sided 99% quantile, stricter than
``EVIDENCE_Z`` because that pair is the best of the 210 with trees on the very rows that test
it, so its lead is biased upward (measured, session 4: at 1.645, leads of 2.0-2.3 standard errors
on 115-200 out-of-fold rows of wine and a small 4-class table shipped trees and lost test rows
to the linear model alone; moons with noise features and Friedman #2, where the trees are
4-8 points ahead, showed 2.4-5.2)."""


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
    trees_lead_z: float = 0.0
    """How many standard errors the lowest-loss pair's mean loss is below the network/linear
    choice's (the evidence for the trees; they join above ``TREES_EVIDENCE_Z``)."""


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

    def most_linear_near(best: tuple[float, float]) -> tuple[float, float]:
        """At ``best``'s trees weight: the most linear pair not significantly worse."""
        for pair in sorted((p for p in grid if p[1] == best[1]), key=lambda pair: -pair[0]):
            if pair == best or not significantly_worse(pair, best):
                return pair
        return best

    def lead_z(pair: tuple[float, float], best: tuple[float, float]) -> float:
        """``best``'s lead over ``pair`` in standard errors of the per-row differences."""
        difference = per_row[pair] - per_row[best]
        error = float(np.std(difference, ddof=1)) / math.sqrt(len(y)) if len(y) > 1 else 0.0
        lead = float(np.mean(difference))
        return lead / error if error > 0 else (math.inf if lead > 0 else 0.0)

    def significantly_worse(pair: tuple[float, float], best: tuple[float, float]) -> bool:
        return lead_z(pair, best) > EVIDENCE_Z

    def lowest(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        least = min(means[p] for p in pairs)
        return min((p for p in pairs if means[p] <= least), key=lambda p: (p[1], abs(p[0] - 0.5)))

    best = lowest(grid)
    # The network/linear choice without trees; trees join only when the best mix with them
    # beats it significantly.
    chosen = most_linear_near(lowest([p for p in grid if p[1] == 0.0]))
    trees_z = lead_z(chosen, best) if best[1] > 0.0 else 0.0
    if trees_z > TREES_EVIDENCE_Z:
        chosen = most_linear_near(best)
    key = (lambda pair: str(pair[0])) if trees is None else (lambda p: f"{p[0]},{p[1]}")
    return BlendChoice(
        weight=chosen[0],
        lowest_loss_weight=best[0],
        losses={key(pair): round(v, 6) for pair, v in means.items()},
        rows=len(y),
        trees_weight=chosen[1],
        lowest_loss_trees_weight=best[1],
        trees_lead_z=round(min(trees_z, 1e6), 3),
    )
