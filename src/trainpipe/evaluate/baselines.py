"""Baselines on the same split, every run: what a network has to beat to be worth shipping.

    scores = baseline_scores(features, encoded, train_rows, categorical, top_k=3)
    scores["linear"]["accuracy"], scores["hgb"]["accuracy"]

- ``linear``: multinomial logistic regression (ridge regression for a regression target) on the
  *same preprocessed features* the network sees (so a gap is the network's, not the
  preprocessing's); its regularization strength is chosen on the validation split from a grid.
- ``hgb``: scikit-learn's HistGradientBoostingClassifier/Regressor on the encoded rows (it
  handles missing values itself; category codes are declared categorical), with its own early
  stopping.

Both train on exactly the labelled training examples the network was fine-tuned on and are
scored on the test split with the metrics the gate uses.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from trainpipe.data.datasets import Split
from trainpipe.evaluate.metrics import HIGHER_IS_BETTER, regression_metrics, scalar_metric_fn

LINEAR_C_GRID = (0.01, 0.1, 1.0, 10.0)
RIDGE_ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)
SEED = 0


def _probabilities(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    probs = np.zeros((len(x), num_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def _scores(y: np.ndarray, probs: np.ndarray, top_k: int) -> dict[str, float]:
    out = {name: float(scalar_metric_fn(name, top_k=top_k)(y, probs)) for name in HIGHER_IS_BETTER}
    return out


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def linear_baseline(
    train: Split, validation: Split, test: Split, num_classes: int, top_k: int
) -> dict:
    from sklearn.linear_model import LogisticRegression

    started = time.monotonic()
    best = None
    for c in LINEAR_C_GRID:
        model = LogisticRegression(C=c, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny or separable data
            model.fit(_flat(train.x), train.y)
        probs = _probabilities(model, _flat(validation.x), num_classes)
        val_accuracy = float((probs.argmax(1) == validation.y).mean())
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, c, model)
    val_accuracy, c, model = best
    probs = _probabilities(model, _flat(test.x), num_classes)
    return {
        "model": f"LogisticRegression(C={c}) on the preprocessed features",
        "C": c,
        "val_accuracy": val_accuracy,
        "fit_s": round(time.monotonic() - started, 3),
        **_scores(test.y, probs, top_k),
    }


def hgb_baseline(
    train: Split,
    test: Split,
    num_classes: int,
    top_k: int,
    categorical: list[bool] | None,
) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier

    started = time.monotonic()
    mask = categorical if categorical and any(categorical) else None
    model = HistGradientBoostingClassifier(random_state=SEED, categorical_features=mask)
    model.fit(_flat(train.x), train.y)
    probs = _probabilities(model, _flat(test.x), num_classes)
    return {
        "model": "HistGradientBoostingClassifier on the encoded rows",
        "fit_s": round(time.monotonic() - started, 3),
        **_scores(test.y, probs, top_k),
    }


def ridge_baseline(train: Split, validation: Split, test: Split) -> dict:
    from sklearn.linear_model import Ridge

    started = time.monotonic()
    best = None
    for alpha in RIDGE_ALPHA_GRID:
        model = Ridge(alpha=alpha).fit(_flat(train.x), train.y)
        val = regression_metrics(validation.y, model.predict(_flat(validation.x)))["r2"]
        if best is None or val > best[0]:
            best = (val, alpha, model)
    val_r2, alpha, model = best
    return {
        "model": f"Ridge(alpha={alpha}) on the preprocessed features",
        "alpha": alpha,
        "val_r2": val_r2,
        "fit_s": round(time.monotonic() - started, 3),
        **regression_metrics(test.y, model.predict(_flat(test.x))),
    }


def hgb_regression_baseline(train: Split, test: Split, categorical: list[bool] | None) -> dict:
    from sklearn.ensemble import HistGradientBoostingRegressor

    started = time.monotonic()
    mask = categorical if categorical and any(categorical) else None
    model = HistGradientBoostingRegressor(random_state=SEED, categorical_features=mask)
    model.fit(_flat(train.x), train.y)
    return {
        "model": "HistGradientBoostingRegressor on the encoded rows",
        "fit_s": round(time.monotonic() - started, 3),
        **regression_metrics(test.y, model.predict(_flat(test.x))),
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
