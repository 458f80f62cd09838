"""Evaluation metrics as small pure functions of numpy arrays.

    probs = softmax(logits)
    scores = classification_metrics(y_true, logits, label_names)      # everything, one dict
    accuracy(y_true, probs.argmax(1)); expected_calibration_error(y_true, probs)
    scalar_metric("macro_f1", y_true, probs)                          # by name, for the gate
    rows = RowScores.from_logits(y_true, logits, top_k=3)             # 4 numbers per example
    scalar_metric("macro_f1", y_true, rows); classification_scores(y_true, rows, label_names)

Conventions: ``y_true`` holds integer class indices ``0..C-1``; ``probs`` is ``[n, C]`` with rows
summing to 1. A class that is never predicted has precision 0 (and never true: recall 0), as in
scikit-learn with ``zero_division=0``.

Every classification metric here (and every bootstrap resample and slice of one) is a function
of four numbers per example: the predicted class, the true class's probability, the top
probability and whether the true class is among the top k. :class:`RowScores` holds just those,
so an evaluation of ``n`` examples keeps ``O(n)`` numbers whatever the number of classes; the
functions take either the full ``probs`` or a ``RowScores`` and give the same floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to [eps, 1] before the log, so one confident mistake is finite."""

DEFAULT_ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class RowScores:
    """One model's classification outputs reduced to what the metrics need, per example."""

    predicted: np.ndarray
    """Predicted class (the most probable; the first of equals), int64."""
    true_prob: np.ndarray
    """Probability of the true class, float64 (log loss)."""
    confidence: np.ndarray
    """Top probability, float64 (calibration)."""
    in_top_k: np.ndarray
    """Whether the true class is among the ``top_k`` most probable, bool."""
    num_classes: int
    top_k: int
    """The ``k`` of ``in_top_k``, at most ``num_classes``."""

    @classmethod
    def from_probs(cls, y_true: np.ndarray, probs: np.ndarray, top_k: int = 1) -> RowScores:
        y = np.asarray(y_true, dtype=np.int64)
        k = min(top_k, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        return cls(
            predicted=probs.argmax(axis=1),
            true_prob=probs[np.arange(len(y)), y],
            confidence=probs.max(axis=1),
            in_top_k=(top == y[:, None]).any(axis=1),
            num_classes=probs.shape[1],
            top_k=k,
        )

    @classmethod
    def from_logits(cls, y_true: np.ndarray, logits: np.ndarray, top_k: int = 1) -> RowScores:
        """Softmax in float64 (as :func:`classification_metrics`), then reduced."""
        return cls.from_probs(y_true, softmax(np.asarray(logits, dtype=np.float64)), top_k)

    @classmethod
    def concat(cls, parts: list[RowScores]) -> RowScores:
        """Batches' scores (at least one, all of the same model) joined in order."""
        first = parts[0]
        return cls(
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("predicted", "true_prob", "confidence", "in_top_k")
            ),
            first.num_classes,
            first.top_k,
        )

    def __len__(self) -> int:
        return len(self.predicted)

    def __getitem__(self, rows) -> RowScores:
        """The examples at ``rows`` (indices, a mask or a slice): bootstrap resamples, slices."""
        return RowScores(
            self.predicted[rows],
            self.true_prob[rows],
            self.confidence[rows],
            self.in_top_k[rows],
            self.num_classes,
            self.top_k,
        )

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.predicted, self.true_prob, self.confidence, self.in_top_k)
        )


Outputs = np.ndarray | RowScores
"""A model's outputs for the metrics: the ``[n, C]`` probabilities, or their :class:`RowScores`."""


def row_scores(y_true: np.ndarray, probs: Outputs, top_k: int = 1) -> RowScores:
    return probs if isinstance(probs, RowScores) else RowScores.from_probs(y_true, probs, top_k)


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


def top_k_accuracy(y_true: np.ndarray, probs: Outputs, k: int) -> float:
    """Share of examples whose true class is among the ``k`` most probable ones."""
    rows = row_scores(y_true, probs, k)
    if rows.top_k != min(k, rows.num_classes):
        raise ValueError(f"these row scores hold the top {rows.top_k}, not the top {k}")
    return float(np.mean(rows.in_top_k)) if len(y_true) else 0.0


def log_loss(y_true: np.ndarray, probs: Outputs) -> float:
    """Mean negative log-likelihood of the true class (natural log)."""
    return float(np.mean(example_log_loss(y_true, probs))) if len(y_true) else 0.0


def example_log_loss(y_true: np.ndarray, probs: Outputs) -> np.ndarray:
    chosen = row_scores(y_true, probs).true_prob
    return -np.log(np.clip(chosen, LOG_LOSS_EPS, 1.0))


def reliability_bins(
    y_true: np.ndarray, probs: Outputs, num_bins: int = DEFAULT_ECE_BINS
) -> list[dict]:
    """Top-label confidence cut into ``num_bins`` equal-width bins over (0, 1]; per bin the
    count, mean confidence and accuracy (the data of a reliability diagram)."""
    rows = row_scores(y_true, probs)
    confidence = rows.confidence
    correct = rows.predicted == y_true
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
    y_true: np.ndarray, probs: Outputs, num_bins: int = DEFAULT_ECE_BINS
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


def scalar_metric_fn(name: str, *, top_k: int = 3) -> Callable[[np.ndarray, Outputs], float]:
    """``fn(y_true, probs) -> float`` for one of :data:`HIGHER_IS_BETTER`'s names; ``probs``
    may be a :class:`RowScores` (holding the same ``top_k``)."""
    if name == "accuracy":
        return lambda y, p: accuracy(y, row_scores(y, p).predicted)
    if name in ("macro_f1", "macro_precision", "macro_recall"):

        def macro(y: np.ndarray, p: Outputs) -> float:
            rows = row_scores(y, p)
            return macro_scores(y, rows.predicted, rows.num_classes)[name]

        return macro
    if name == "top_k_accuracy":
        return lambda y, p: top_k_accuracy(y, p, top_k)
    if name == "log_loss":
        return log_loss
    if name == "ece":
        return expected_calibration_error
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(HIGHER_IS_BETTER)}")


def scalar_metric(name: str, y_true: np.ndarray, probs: Outputs, *, top_k: int = 3) -> float:
    return scalar_metric_fn(name, top_k=top_k)(y_true, probs)


def classification_metrics(
    y_true: np.ndarray, logits: np.ndarray, label_names: list[str], *, top_k: int = 3
) -> dict:
    """Every classification metric of one model on one split, JSON-ready."""
    return classification_scores(y_true, RowScores.from_logits(y_true, logits, top_k), label_names)


def classification_scores(y_true: np.ndarray, rows: RowScores, label_names: list[str]) -> dict:
    """:func:`classification_metrics` from a model's :class:`RowScores` (top-k as they hold)."""
    num_classes = len(label_names)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = rows.predicted
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1 = precision_recall_f1(confusion)
    support = confusion.sum(axis=1)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "top_k": rows.top_k,
        "top_k_accuracy": top_k_accuracy(y_true, rows, rows.top_k),
        "log_loss": log_loss(y_true, rows),
        "ece": expected_calibration_error(y_true, rows),
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
        "reliability": reliability_bins(y_true, rows),
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
