"""Gradient-boosted trees as a member of a table model's blend: scikit-learn's
HistGradientBoosting, configured as the evaluate stage's tree baseline, fitted on the
preprocessed features the network and the linear model see, and packed into a torch module.

    model = fit_trees(train.x, train.y, num_classes=3)       # None: regression
    oof = trees_out_of_fold(train.x, train.y, folds, num_classes=3)
    module = tree_module(model, num_classes=3)               # TreeEnsemble: logits or value

The member sees preprocessed features (robust-scaled numbers, missing indicators, one-hot
categories), not the encoded rows with declared categorical columns the baseline gets: the
blend feeds every member the same input, and a monotone per-column scaling leaves the trees'
quantile bins as they are, so only categorical splits differ (one category against the rest
per split instead of subsets), and no bitset splits have to be carried into the graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from trainpipe.models.trees import TreeEnsemble
from trainpipe.train.linear import ABSENT_CLASS_LOGIT, flat, predict

SEED = 0


def hgb_estimator(regression: bool, categorical: list[bool] | None = None):
    """The HistGradientBoosting model of the tree baseline and the blend member: scikit-learn's
    defaults (its own early stopping on large tables), seeded."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    mask = categorical if categorical and any(categorical) else None
    kind = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    return kind(random_state=SEED, categorical_features=mask)


def fit_trees(x: np.ndarray, y: np.ndarray, *, num_classes: int | None):
    """The fitted trees of the rows (``num_classes`` None: regression); a training set of one
    class (a fold without a rare class's only example) gets the class prior instead."""
    regression = num_classes is None
    if not regression and len(np.unique(y)) < 2:
        from sklearn.dummy import DummyClassifier

        return DummyClassifier(strategy="prior").fit(flat(x), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hgb_estimator(regression).fit(flat(x), y)


def trees_out_of_fold(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, *, num_classes: int | None
) -> np.ndarray:
    """Each row's prediction (probabilities, or values) by trees fitted on the other folds."""
    out = np.zeros((len(y),) if num_classes is None else (len(y), num_classes))
    for k in np.unique(folds):
        held_out = folds == k
        model = fit_trees(x[~held_out], y[~held_out], num_classes=num_classes)
        out[held_out] = predict(model, x[held_out], num_classes)
    return out


def _threshold_below(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at most each float64 threshold: for float32 inputs ``x <= t32``
    then decides exactly as scikit-learn's ``x <= t64`` (rounding to nearest could land on
    an input value above the threshold and send it left)."""
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def pack_trees(model, num_classes: int | None) -> dict[str, torch.Tensor]:
    """The fitted HistGradientBoosting model's trees as TreeEnsemble's buffers (see
    ``trainpipe.models.trees``). Classification: logits over ``num_classes`` (a binary model's
    one tree per iteration is the second class's logit against 0; classes without training
    examples get ``ABSENT_CLASS_LOGIT``)."""
    predictors = model._predictors  # [iteration][tree per iteration]: TreePredictor
    baseline_raw = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    if num_classes is None:
        columns, outputs = [0], 1
        baseline = baseline_raw.copy()
    else:
        classes = list(model.classes_)
        outputs = num_classes
        baseline = np.full(num_classes, ABSENT_CLASS_LOGIT)
        if len(classes) == 2:
            columns = [classes[1]]
            baseline[classes[0]] = 0.0
        else:
            columns = classes
        baseline[columns] = baseline_raw
    nodes = [tree.nodes for iteration in predictors for tree in iteration]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits cannot be packed; fit on one-hot features")
    offsets = np.cumsum([0] + [len(n) for n in nodes])[:-1]
    flat_nodes = np.concatenate(nodes)
    own = np.arange(len(flat_nodes))
    shift = np.repeat(offsets, [len(n) for n in nodes])
    leaf = flat_nodes["is_leaf"].astype(bool)
    left = np.where(leaf, own, flat_nodes["left"].astype(np.int64) + shift)
    right = np.where(leaf, own, flat_nodes["right"].astype(np.int64) + shift)
    output = np.zeros((len(nodes), outputs), dtype=np.float32)
    per_iteration = len(predictors[0]) if predictors else 1
    for t in range(len(nodes)):
        output[t, columns[t % per_iteration]] = 1.0
    return {
        "feature": torch.as_tensor(np.where(leaf, 0, flat_nodes["feature_idx"]), dtype=torch.int64),
        "threshold": torch.as_tensor(_threshold_below(flat_nodes["num_threshold"])),
        "left": torch.as_tensor(left, dtype=torch.int64),
        "right": torch.as_tensor(right, dtype=torch.int64),
        "missing_left": torch.as_tensor(flat_nodes["missing_go_to_left"].astype(bool)),
        "value": torch.as_tensor(np.where(leaf, flat_nodes["value"], 0.0), dtype=torch.float32),
        "roots": torch.as_tensor(offsets, dtype=torch.int64),
        "output": torch.as_tensor(output),
        "baseline": torch.as_tensor(baseline, dtype=torch.float32),
        "steps": torch.tensor(int(max((int(n["depth"].max()) for n in nodes), default=0))),
    }


def tree_module(model, num_classes: int | None) -> TreeEnsemble:
    """The fitted model as a torch module: class logits whose softmax is ``predict_proba``, or
    the predicted value (one output)."""
    return TreeEnsemble(**pack_trees(model, num_classes)).eval()
