"""The evaluate stage's numbers from the test split's collected outputs: the challenger's
metrics and slices, and the comparison with the champion the gate decides on.

    outputs = collect_outputs(test, models, columns, top_k=cfg.top_k)
    scores, comparison = classification_results(cfg, outputs, label_names, champion, fixed=None)
    scores, comparison = regression_results(outputs, champion)

Everything here reads the per-example ``RowScores`` (or predicted targets) that
:func:`~trainpipe.evaluate.outputs.collect_outputs` keeps, never a ``[rows, classes]`` matrix.
"""

from __future__ import annotations

import numpy as np

from trainpipe.evaluate.champion import ChampionModel, compare
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.metrics import accuracy, classification_scores, regression_metrics
from trainpipe.evaluate.outputs import SplitOutputs
from trainpipe.evaluate.slices import build_slices, slice_scores

PLOTTED_POINTS = 10_000
"""Regression predictions kept in metrics.json for the report's scatter plot: evenly spaced
test rows, so a streamed test split of millions of rows does not become a list of millions."""


def classification_results(
    cfg: GateConfig,
    outputs: SplitOutputs,
    label_names: list[str],
    champion: ChampionModel | None,
    fixed: int | None,
) -> tuple[dict, dict]:
    """Metrics with slices, and the champion comparison; ``fixed``: in continual runs, the number
    of leading test examples that form the fixed original test set (the forgetting bound's)."""
    y = outputs.y
    slices = build_slices(
        y,
        outputs.columns,
        label_names,
        cfg.slice_columns,
        columns=cfg.slice_columns,
        num_buckets=cfg.slice_buckets,
    )
    ours = outputs.outputs["challenger"]
    theirs = outputs.outputs.get("champion")
    scores = classification_scores(y, ours, label_names)
    scores["slices"] = slice_scores(slices, y, ours)
    comparison = compare(cfg, y, ours, champion, theirs, slices)
    if fixed:
        first = y[:fixed]
        mine = accuracy(first, ours.predicted[:fixed])
        scores["fixed_test"] = {"examples": fixed, "accuracy": mine}
        champion_accuracy = None if theirs is None else accuracy(first, theirs.predicted[:fixed])
        comparison["fixed_test"] = {"examples": fixed, "champion_accuracy": champion_accuracy}
    return scores, comparison


def regression_results(outputs: SplitOutputs, champion: ChampionModel | None) -> tuple[dict, dict]:
    """Metrics (with evenly spaced predictions for the report) and the champion comparison of a
    regression model; the champion is scored on the same test rows, no bootstrap."""
    y = outputs.y
    predicted = outputs.outputs["challenger"]
    scores = regression_metrics(y, predicted)
    shown = np.unique(np.linspace(0, len(y) - 1, min(len(y), PLOTTED_POINTS)).astype(int))
    scores["actual"] = y[shown].astype(float).tolist()
    scores["predicted"] = predicted[shown].astype(float).tolist()
    scores["slices"] = {}
    comparison: dict = {"metric": "r2", "champion": None, "intervals": {}}
    if champion is not None:
        comparison["champion"] = champion.info()
        if "champion" in outputs.outputs:
            comparison["champion"]["metrics"] = regression_metrics(y, outputs.outputs["champion"])
            comparison["champion"]["slices"] = {}
    return scores, comparison
