"""Seeded test splits and two models' outputs for checking that evaluation's results do not
change when its per-example bookkeeping does (tests/unit/data/evaluate_golden.json holds the
results the pre-streaming code computed from the full probability matrix on these cases)."""

from __future__ import annotations

import numpy as np

FEATURE_NAMES = ["a", "b", "c"]
SLICE_COLUMNS = ["b", "c"]
"""``b`` is continuous (quantile buckets), ``c`` has three values (one slice per value)."""
CASES = {"binary": 2, "multiclass": 5, "regression": 0}
ROWS = 257


def evaluate_case(kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(x, y, models)`` for ``kind`` in :data:`CASES`: models map a name (challenger,
    champion) to ``fn(x) -> outputs`` (logits, or the predicted target as ``[n, 1]``)."""
    num_classes = CASES[kind]
    rng = np.random.default_rng(7 + num_classes)
    x = rng.normal(size=(ROWS, 3)).astype(np.float32)
    x[:, 2] = rng.integers(0, 3, ROWS)
    width = max(num_classes, 1)
    w_challenger = rng.normal(size=(3, width)).astype(np.float32)
    w_champion = rng.normal(size=(3, width)).astype(np.float32)
    if num_classes:
        y = (x @ w_challenger + rng.normal(size=(ROWS, width))).argmax(1).astype(np.int64)
    else:
        y = (x @ w_challenger[:, 0] + 0.3 * rng.normal(size=ROWS)).astype(np.float32)
    # Rows of equal logits: ties must break the same way however the rows are batched.
    x[:4] = 0.0

    def challenger(b: np.ndarray) -> np.ndarray:
        return b @ w_challenger

    def champion(b: np.ndarray) -> np.ndarray:
        return 0.5 * (b @ w_champion)

    return x, y, {"challenger": challenger, "champion": champion}
