"""The linear model on the preprocessed features: the evaluate stage's linear baseline and the
linear part of a table model's blend are this one fit, so the shipped blend at weight 1 *is* the
baseline.

    fit = fit_linear(train.x, train.y, validation.x, validation.y, num_classes=3)
    fit.predict(x)            # class probabilities [n, classes], or values [n] (regression)
    linear_module(fit, ...)   # the same model as a torch nn.Linear (logits or values)

Logistic regression (ridge regression for a regression target). Its regularization strength is
chosen by ``CV_FOLDS``-fold cross-validation on the training rows (log loss, or mean squared
error) when the training table is small enough to fit it ``grid x folds`` times
(``CV_MAX_CELLS``); on larger tables the validation split (thousands of rows there) decides.
A few dozen validation rows tie or mislead; folds over every training row do not. The search is
coarse to fine: the decade grid, then the two half-decade neighbours of its best strength (the
loss is smooth in the log of the strength; a decade apart, the best of the grid can be a
factor 3 off and its log loss noticeably worse, which also tilts the blend against the linear
model).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LOGISTIC_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
RIDGE_ALPHA_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
REFINE_FACTOR = 10.0**0.5
"""The refinement step: the best grid strength divided and multiplied by this (half a decade)."""
CV_FOLDS = 5
CV_MAX_CELLS = 4_000_000
"""Cross-validate the strength when training rows x features is at most this; else validate."""
SEED = 0
ABSENT_CLASS_LOGIT = -50.0
"""Logit of a class with no training example (sklearn gives it probability 0)."""


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def fold_ids(y: np.ndarray, folds: int, *, stratify: bool, seed: int = SEED) -> np.ndarray:
    """A fold index per row; classes spread over the folds when ``stratify``."""
    from sklearn.model_selection import KFold, StratifiedKFold

    ids = np.zeros(len(y), dtype=np.int64)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if stratify
        else KFold(folds, shuffle=True, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has fewer members than folds"
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y)):
            ids[held_out] = k
    return ids


def _estimator(regression: bool, strength: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    return Ridge(alpha=strength) if regression else LogisticRegression(C=strength, max_iter=2000)


def _fit(regression: bool, strength: float, x: np.ndarray, y: np.ndarray):
    if not regression and len(np.unique(y)) < 2:
        # A fold without the one training example of a rare class: logistic regression needs
        # two classes; the class prior is the honest prediction of such a fold.
        from sklearn.dummy import DummyClassifier

        return DummyClassifier(strategy="prior").fit(flat(x), y)
    model = _estimator(regression, strength)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny or separable data
        return model.fit(flat(x), y)


def predict(model, x: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Probabilities ``[n, num_classes]`` (classes absent from training get 0), or values."""
    if num_classes is None:
        return model.predict(flat(x))
    probs = np.zeros((len(x), num_classes))
    probs[:, model.classes_] = model.predict_proba(flat(x))
    return probs


def row_losses(predicted: np.ndarray, y: np.ndarray, regression: bool) -> np.ndarray:
    """Each row's squared error (values), or log loss (class probabilities)."""
    if regression:
        return (predicted - y) ** 2
    return -np.log(np.clip(predicted[np.arange(len(y)), y], 1e-15, None))


def prediction_loss(predicted: np.ndarray, y: np.ndarray, regression: bool) -> float:
    """Mean squared error of values, or log loss of class probabilities."""
    return float(np.mean(row_losses(predicted, y, regression)))


@dataclass(frozen=True)
class LinearFit:
    model: object
    """The fitted scikit-learn estimator (on every training row)."""
    regression: bool
    num_classes: int | None
    """None for a regression target."""
    strength: float
    """C (logistic) or alpha (ridge) chosen."""
    chosen_by: str
    """How the strength was chosen, in words (for reports)."""
    losses: dict[str, float]
    """The selection loss per strength (cross-validated, or on validation)."""

    @property
    def description(self) -> str:
        kind = "Ridge(alpha=" if self.regression else "LogisticRegression(C="
        return f"{kind}{self.strength}) on the preprocessed features"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict(self.model, x, self.num_classes)

    def to_dict(self) -> dict:
        return {
            "model": self.description,
            "strength": self.strength,
            "chosen_by": self.chosen_by,
            "losses": self.losses,
        }


def out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    regression: bool,
    strength: float,
    num_classes: int | None,
) -> np.ndarray:
    """Each row's prediction by a model fitted on the other folds."""
    shape = (len(y),) if regression else (len(y), num_classes)
    out = np.zeros(shape)
    for k in np.unique(folds):
        held_out = folds == k
        model = _fit(regression, strength, x[~held_out], y[~held_out])
        out[held_out] = predict(model, x[held_out], num_classes)
    return out


def refined(grid: tuple[float, ...], best: float) -> list[float]:
    """The half-decade neighbours of ``best`` that lie strictly inside ``grid``'s range."""
    candidates = (best / REFINE_FACTOR, best * REFINE_FACTOR)
    return [float(f"{s:.4g}") for s in candidates if grid[0] < s < grid[-1]]


def search_strength(grid: tuple[float, ...], loss) -> dict[float, float]:
    """``loss`` (a function of the strength) on ``grid``, then on the half-decade neighbours of
    the grid's best: every strength tried and its loss."""
    losses = {s: loss(s) for s in grid}
    best = min(grid, key=lambda s: losses[s])
    losses |= {s: loss(s) for s in refined(grid, best)}
    return losses


def fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    *,
    num_classes: int | None,
) -> LinearFit:
    """The linear model of the training rows, its strength chosen by cross-validation (small
    tables) or on the validation split (large ones). ``num_classes`` None: regression."""
    regression = num_classes is None
    grid = RIDGE_ALPHA_GRID if regression else LOGISTIC_C_GRID
    width = flat(x[:1]).shape[1] if len(x) else 0
    if len(x) * width <= CV_MAX_CELLS and len(x) >= 2 * CV_FOLDS:
        folds = fold_ids(y, CV_FOLDS, stratify=not regression)

        def loss(s: float) -> float:
            oof = out_of_fold(
                x, y, folds, regression=regression, strength=s, num_classes=num_classes
            )
            return prediction_loss(oof, y, regression)

        chosen_by = f"{CV_FOLDS}-fold cross-validation on {len(x)} training rows"
    else:

        def loss(s: float) -> float:
            predicted = predict(_fit(regression, s, x, y), validation_x, num_classes)
            return prediction_loss(predicted, validation_y, regression)

        chosen_by = f"the validation split ({len(validation_y)} rows)"
    losses = search_strength(grid, loss)
    strength = min(losses, key=losses.get)
    return LinearFit(
        model=_fit(regression, strength, x, y),
        regression=regression,
        num_classes=num_classes,
        strength=strength,
        chosen_by=chosen_by,
        losses={str(s): round(v, 6) for s, v in sorted(losses.items())},
    )


def linear_module(fit: LinearFit, in_features: int) -> nn.Linear:
    """The fitted model as a torch layer on the flattened features: class logits whose softmax
    is ``fit.predict``'s probabilities, or the predicted value (one output)."""
    model = fit.model
    outputs = 1 if fit.regression else fit.num_classes
    weight = np.zeros((outputs, in_features))
    bias = np.zeros(outputs)
    if fit.regression:
        weight[0], bias[0] = model.coef_.reshape(-1), float(model.intercept_)
    else:
        bias[:] = ABSENT_CLASS_LOGIT
        classes = model.classes_
        if len(classes) == 2:
            # Binary: P(second) = sigmoid(z) = softmax([0, z])[1].
            bias[classes[0]] = 0.0
            weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        else:
            weight[classes], bias[classes] = model.coef_, model.intercept_
    layer = nn.Linear(in_features, outputs)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer
