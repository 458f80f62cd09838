"""Slices of the test split: one per true class, plus one per value (or value range) of each
configured feature column.

    slices = build_slices(y, x, label_names, feature_names, columns=["age"], num_buckets=4)
    slice_scores(slices, y, probs)     # {"class=3": {"kind": "class", "n": 36, "accuracy": ...}}

A column with at most ``num_buckets`` distinct values in the test split gets one slice per value
(``plan=2``); a column with more is cut at its quantiles into ``num_buckets`` ranges
(``age in [31, 45)``, the last range closed). Edges come from the test split, which champion and
challenger share, so both are scored on identical slices. Accuracy on a class slice is that
class's recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainpipe.errors import ConfigError
from trainpipe.evaluate.metrics import Outputs, accuracy, log_loss, row_scores


@dataclass(frozen=True)
class Slice:
    name: str
    kind: str
    """``class`` or ``column``."""
    indices: np.ndarray


def class_slices(y_true: np.ndarray, label_names: list[str]) -> list[Slice]:
    return [
        Slice(f"class={name}", "class", np.flatnonzero(y_true == i))
        for i, name in enumerate(label_names)
    ]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def slice_column_indices(
    feature_names: list[str], feature_shape: list[int], columns: list[str]
) -> list[int]:
    """Positions of ``columns`` among a table's features; raises naming a column that is not
    one (or when the data has no named columns)."""
    if columns and (not feature_names or len(feature_shape) != 1):
        raise ConfigError(
            f"config error: gate.slice_columns={columns}: this dataset has no named feature "
            "columns (built-in digits or arrays); remove gate.slice_columns"
        )
    for column in columns:
        if column not in feature_names:
            raise ConfigError(
                f"config error: gate.slice_columns: {column!r} is not a feature column "
                f"(features: {', '.join(feature_names)})"
            )
    return [feature_names.index(column) for column in columns]


def column_slices(
    x: np.ndarray, feature_names: list[str], columns: list[str], num_buckets: int
) -> list[Slice]:
    indices = slice_column_indices(feature_names, list(x.shape[1:]), columns)
    slices: list[Slice] = []
    for column, index in zip(columns, indices, strict=True):
        values = x[:, index]
        distinct = np.unique(values)
        if len(distinct) <= num_buckets:
            for value in distinct:
                indices = np.flatnonzero(values == value)
                slices.append(Slice(f"{column}={_fmt(value)}", "column", indices))
            continue
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, num_buckets + 1)))
        bucket = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            closing = "]" if b == len(edges) - 2 else ")"
            name = f"{column} in [{_fmt(edges[b])}, {_fmt(edges[b + 1])}{closing}"
            slices.append(Slice(name, "column", np.flatnonzero(bucket == b)))
    return slices


def build_slices(
    y_true: np.ndarray,
    x: np.ndarray,
    label_names: list[str],
    feature_names: list[str],
    *,
    columns: list[str],
    num_buckets: int,
) -> list[Slice]:
    return class_slices(y_true, label_names) + column_slices(x, feature_names, columns, num_buckets)


def slice_scores(slices: list[Slice], y_true: np.ndarray, probs: Outputs) -> dict[str, dict]:
    """Accuracy and log loss per slice; ``probs`` may be the model's ``RowScores``."""
    rows = row_scores(y_true, probs)
    scores = {}
    for s in slices:
        y, p = y_true[s.indices], rows[s.indices]
        scores[s.name] = {
            "kind": s.kind,
            "n": len(s.indices),
            "accuracy": accuracy(y, p.predicted),
            "log_loss": log_loss(y, p),
        }
    return scores
