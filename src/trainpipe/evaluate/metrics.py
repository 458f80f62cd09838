"""Evaluation metrics as small pure functions of numpy arrays.

    probs = softmax(logits)
    scores = classification_metrics(y_true, logits, label_names)      # everything, one dict
    accuracy(y_true, probs.argmax(1)); expected_calibration_error(y_true, probs)
    scalar_metric("macro_f1", y_true, probs)                          # by name, for the gate

Conventions: ``y_true`` holds integer class indices ``0..C-1``; ``probs`` is ``[n, C]`` with rows
summing to 1. A class that is never predicted has precision 0 (and never true: recall 0), as in
scikit-learn with ``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to [eps, 1] before the log, so one confident mistake is finite."""

DEFAULT_ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return precision, recall, f1


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of examples whose true class is among the ``k`` most probable ones."""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1))) if len(y_true) else 0.0


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (natural log)."""
    return float(np.mean(example_log_loss(y_true, probs))) if len(y_true) else 0.0


def example_log_loss(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    chosen = probs[np.arange(len(y_true)), y_true]
    return -np.log(np.clip(chosen, LOG_LOSS_EPS, 1.0))


def reliability_bins(
    y_true: np.ndarray, probs: np.ndarray, num_bins: int = DEFAULT_ECE_BINS
) -> list[dict]:
    """Top-label confidence cut into ``num_bins`` equal-width bins over (0, 1]; per bin the
    count, mean confidence and accuracy (the data of a reliability diagram)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    # Bin i holds confidences in (i/B, (i+1)/B]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=num_bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=num_bins)
    bins = []
    for i in range(num_bins):
        n = int(counts[i])
        bins.append(
            {
                "lower": i / num_bins,
                "upper": (i + 1) / num_bins,
                "count": n,
                "confidence": float(conf_sum[i] / n) if n else None,
                "accuracy": float(correct_sum[i] / n) if n else None,
            }
        )
    return bins


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, num_bins: int = DEFAULT_ECE_BINS
) -> float:
    """ECE: the count-weighted mean of |accuracy - confidence| over the reliability bins."""
    if not len(y_true):
        return 0.0
    total = 0.0
    for b in reliability_bins(y_true, probs, num_bins):
        if b["count"]:
            total += b["count"] * abs(b["accuracy"] - b["confidence"])
    return total / len(y_true)


def macro_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    precision, recall, f1 = precision_recall_f1(confusion_matrix(y_true, y_pred, num_classes))
    return {
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }


# Regression helpers (for models with a numeric target; the gate uses classification metrics).


def mean_squared_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2))


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot. A constant target has no variance to explain: 1.0 when it is
    predicted exactly, else 0.0 (scikit-learn's convention)."""
    y_true = np.asarray(y_true, float)
    residual = float(np.sum((y_true - np.asarray(y_pred, float)) ** 2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


# Scalar metrics by name: what the gate thresholds and the bootstrap resample.

HIGHER_IS_BETTER = {
    "accuracy": True,
    "macro_f1": True,
    "macro_precision": True,
    "macro_recall": True,
    "top_k_accuracy": True,
    "log_loss": False,
    "ece": False,
}


def scalar_metric_fn(name: str, *, top_k: int = 3) -> Callable[[np.ndarray, np.ndarray], float]:
    """``fn(y_true, probs) -> float`` for one of :data:`HIGHER_IS_BETTER`'s names."""
    if name == "accuracy":
        return lambda y, p: accuracy(y, p.argmax(axis=1))
    if name in ("macro_f1", "macro_precision", "macro_recall"):
        return lambda y, p: macro_scores(y, p.argmax(axis=1), p.shape[1])[name]
    if name == "top_k_accuracy":
        return lambda y, p: top_k_accuracy(y, p, top_k)
    if name == "log_loss":
        return log_loss
    if name == "ece":
        return expected_calibration_error
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(HIGHER_IS_BETTER)}")


def scalar_metric(name: str, y_true: np.ndarray, probs: np.ndarray, *, top_k: int = 3) -> float:
    return scalar_metric_fn(name, top_k=top_k)(y_true, probs)


def classification_metrics(
    y_true: np.ndarray, logits: np.ndarray, label_names: list[str], *, top_k: int = 3
) -> dict:
    """Every classification metric of one model on one split, JSON-ready."""
    num_classes = len(label_names)
    probs = softmax(np.asarray(logits, dtype=np.float64))
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1 = precision_recall_f1(confusion)
    support = confusion.sum(axis=1)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "top_k": min(top_k, num_classes),
        "top_k_accuracy": top_k_accuracy(y_true, probs, top_k),
        "log_loss": log_loss(y_true, probs),
        "ece": expected_calibration_error(y_true, probs),
        "num_examples": len(y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "confusion_matrix": confusion.tolist(),
        "reliability": reliability_bins(y_true, probs),
    }


def regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict:
    """R^2, RMSE and MAE of one model's predictions on one split, JSON-ready."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(prediction, dtype=np.float64).reshape(-1)
    residual = p - y
    variance = float(np.var(y))
    return {
        "task": "regression",
        "r2": 1.0 - float(np.mean(residual**2)) / variance if variance > 0 else 0.0,
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
        "num_examples": len(y),
    }


def missing_classes(train_y: np.ndarray, test_y: np.ndarray, label_names: list[str]) -> list[str]:
    """Names of classes with training examples but none in the test split."""
    seen = np.bincount(train_y, minlength=len(label_names)) > 0
    tested = np.bincount(test_y, minlength=len(label_names)) > 0
    return [label_names[i] for i in np.flatnonzero(seen & ~tested)]
