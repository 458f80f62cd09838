"""Baselines on the same split, every run: what a network has to beat to be worth shipping.

    scores = baseline_scores(features, encoded, train_rows, categorical, top_k=3)
    scores["linear"]["accuracy"], scores["hgb"]["accuracy"]

- ``linear``: multinomial logistic regression (ridge regression for a regression target) on the
  *same preprocessed features* the network sees (so a gap is the network's, not the
  preprocessing's); its regularization strength is chosen by cross-validation on the training
  rows (on the validation split for large tables): ``trainpipe.train.linear.fit_linear``, the
  very fit a table model's blend carries as its linear part.
- ``hgb``: scikit-learn's HistGradientBoostingClassifier/Regressor on the encoded rows (it
  handles missing values itself; category codes are declared categorical), with its own early
  stopping.

Both train on exactly the labelled training examples the network was fine-tuned on and are
scored on the test split with the metrics the gate uses.
"""

from __future__ import annotations

import time

import numpy as np

from trainpipe.data.datasets import Split
from trainpipe.evaluate.metrics import HIGHER_IS_BETTER, regression_metrics, scalar_metric_fn
from trainpipe.train.linear import fit_linear, flat, predict
from trainpipe.train.trees import hgb_estimator


def _scores(y: np.ndarray, probs: np.ndarray, top_k: int) -> dict[str, float]:
    out = {name: float(scalar_metric_fn(name, top_k=top_k)(y, probs)) for name in HIGHER_IS_BETTER}
    return out


def linear_baseline(
    train: Split, validation: Split, test: Split, num_classes: int, top_k: int
) -> dict:
    started = time.monotonic()
    fit = fit_linear(train.x, train.y, validation.x, validation.y, num_classes=num_classes)
    return {
        **fit.to_dict(),
        "fit_s": round(time.monotonic() - started, 3),
        **_scores(test.y, fit.predict(test.x), top_k),
    }


def hgb_baseline(
    train: Split,
    test: Split,
    num_classes: int,
    top_k: int,
    categorical: list[bool] | None,
) -> dict:
    started = time.monotonic()
    model = hgb_estimator(False, categorical)
    model.fit(flat(train.x), train.y)
    probs = predict(model, test.x, num_classes)
    return {
        "model": "HistGradientBoostingClassifier on the encoded rows",
        "fit_s": round(time.monotonic() - started, 3),
        **_scores(test.y, probs, top_k),
    }


def ridge_baseline(train: Split, validation: Split, test: Split) -> dict:
    started = time.monotonic()
    fit = fit_linear(train.x, train.y, validation.x, validation.y, num_classes=None)
    return {
        **fit.to_dict(),
        "fit_s": round(time.monotonic() - started, 3),
        **regression_metrics(test.y, fit.predict(test.x)),
    }


def hgb_regression_baseline(train: Split, test: Split, categorical: list[bool] | None) -> dict:
    started = time.monotonic()
    model = hgb_estimator(True, categorical)
    model.fit(flat(train.x), train.y)
    return {
        "model": "HistGradientBoostingRegressor on the encoded rows",
        "fit_s": round(time.monotonic() - started, 3),
        **regression_metrics(test.y, model.predict(flat(test.x))),
    }


def baseline_scores(
    features: dict[str, Split],
    encoded: dict[str, Split],
    num_classes: int,
    *,
    categorical: list[bool] | None,
    top_k: int,
    regression: bool = False,
) -> dict:
    """Both baselines; ``features``/``encoded`` hold train (the labelled rows), validation and
    test splits as the network sees them and as stored (encoded rows)."""
    if regression:
        return {
            "linear": ridge_baseline(features["train"], features["validation"], features["test"]),
            "hgb": hgb_regression_baseline(encoded["train"], encoded["test"], categorical),
            "train_examples": len(features["train"]),
        }
    return {
        "linear": linear_baseline(
            features["train"], features["validation"], features["test"], num_classes, top_k
        ),
        "hgb": hgb_baseline(encoded["train"], encoded["test"], num_classes, top_k, categorical),
        "train_examples": len(features["train"]),
    }
