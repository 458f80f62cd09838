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
(the network gets the rest). Two rules compete: the simpler one, the network/linear weight
above (trees weight 0), and the one with trees: the lowest-loss pair's trees weight, the linear
weight at it by the rule above. Each is *cross-validated over the rows* (``EVIDENCE_FOLDS``:
chosen on four fifths, scored on the fifth held out), and the trees join only when their rule's
held-out per-row losses are lower than those of the lowest-loss mix without trees by more than
``EVIDENCE_Z`` standard errors. Compared on the
very rows that chose it, the best of 210 pairs with trees always looks better than it is
(measured, session 4: leads of 2.0-2.4 standard errors on wine and a small 4-class table,
where the shipped trees then lost test rows to the linear model alone).
The finetune stage passes *out-of-fold* predictions of every training row when it has them (the
ensemble's cross-fitted members and linear models fitted on the same folds), else the
validation split's predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainpipe.train.linear import fold_ids, row_losses

BLEND_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))
EVIDENCE_Z = 1.645
"""A weight more linear than the lowest-loss one is kept while its extra loss is at most this
many standard errors: the one-sided 95% quantile of the normal distribution. (One standard
error, 84%, let a network that wins on a hundred out-of-fold rows by chance ship: wine.)"""

EVIDENCE_FOLDS = 5
"""Folds of the rows on which the rules with and without trees are cross-validated."""


def _z(difference: np.ndarray) -> float:
    """The mean of per-row loss differences in standard errors (0 for fewer than 2 rows)."""
    if len(difference) < 2:
        return 0.0
    error = float(np.std(difference, ddof=1)) / math.sqrt(len(difference))
    lead = float(np.mean(difference))
    return lead / error if error > 0 else (math.inf if lead > 0 else 0.0)


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
    """How many standard errors the rule with trees beats the rule without, cross-validated
    over the rows (the evidence for the trees; they join above ``EVIDENCE_Z``)."""


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
    losses = np.stack(
        [row_losses(blend(network, linear, w, trees, t), y, regression) for w, t in grid]
    )
    index = {pair: i for i, pair in enumerate(grid)}
    every_row = np.arange(len(y))

    def lead_z(pair: tuple[float, float], best: tuple[float, float], rows: np.ndarray) -> float:
        """``best``'s lead over ``pair`` in standard errors of the per-row differences."""
        return _z(losses[index[pair], rows] - losses[index[best], rows])

    def lowest(pairs: list[tuple[float, float]], rows: np.ndarray) -> tuple[float, float]:
        means = losses[[index[p] for p in pairs]][:, rows].mean(axis=1)
        least = means.min()
        return min(
            (p for p, m in zip(pairs, means, strict=True) if m <= least),
            key=lambda p: (p[1], abs(p[0] - 0.5)),
        )

    def most_linear_near(best: tuple[float, float], rows: np.ndarray) -> tuple[float, float]:
        """At ``best``'s trees weight: the most linear pair not significantly worse."""
        for pair in sorted((p for p in grid if p[1] == best[1]), key=lambda pair: -pair[0]):
            if pair == best or lead_z(pair, best, rows) <= EVIDENCE_Z:
                return pair
        return best

    without_trees = [p for p in grid if p[1] == 0.0]

    def simpler(rows: np.ndarray) -> tuple[float, float]:
        return most_linear_near(lowest(without_trees, rows), rows)

    def with_trees(rows: np.ndarray) -> tuple[float, float]:
        return most_linear_near(lowest(grid, rows), rows)

    best = lowest(grid, every_row)
    chosen = simpler(every_row)
    trees_z = 0.0
    if trees is not None and len(y) >= 2 * EVIDENCE_FOLDS:
        # Each rule chooses on the other folds and is scored on the held-out one, so the lead
        # of the mix with trees carries no bias from being the best of 210 on the same rows.
        # Against the lowest-loss mix without trees, not the (more linear) simpler choice: the
        # trees must add to what the network and linear model can do, not to that caution.
        folds = fold_ids(y, EVIDENCE_FOLDS, stratify=False)
        difference = np.zeros(len(y))
        for k in range(EVIDENCE_FOLDS):
            held_out, rest = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
            a, b = lowest(without_trees, rest), with_trees(rest)
            difference[held_out] = losses[index[a], held_out] - losses[index[b], held_out]
        trees_z = _z(difference)
        if trees_z > EVIDENCE_Z:
            chosen = with_trees(every_row)
    means = losses.mean(axis=1)
    key = (lambda pair: str(pair[0])) if trees is None else (lambda p: f"{p[0]},{p[1]}")
    return BlendChoice(
        weight=chosen[0],
        lowest_loss_weight=best[0],
        losses={key(pair): round(float(means[i]), 6) for pair, i in index.items()},
        rows=len(y),
        trees_weight=chosen[1],
        lowest_loss_trees_weight=best[1],
        trees_lead_z=round(min(trees_z, 1e6), 3),
    )
