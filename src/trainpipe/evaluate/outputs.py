"""Every model's outputs on one split, computed batch by batch in one pass over the data.

    outputs = collect_outputs(dataset.test, {"challenger": fn, "champion": fn2}, [3], top_k=3)
    outputs.y, outputs.outputs["challenger"], outputs.columns, outputs.nbytes

The metrics, bootstrap intervals, slices and the champion comparison are functions of the
labels and each model's outputs per example (a paired bootstrap and quantile slices need them
per example), never of the features. So evaluation streams the features once, in batches, and
reduces each batch's outputs as it goes: a classifier's logits become its ``RowScores`` (the
predicted class, the true class's probability, the top probability and whether the true class
is in the top k: 25 bytes per example, whatever the number of classes), a regression model's
its predicted target (4 bytes). Only the current batch's ``[rows, classes]`` logits are ever
held, so memory grows with the test rows alone, not with rows x classes; an in-memory split
(one batch source) and a streamed one go through the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainpipe.data.batches import BATCH_ROWS, split_batches
from trainpipe.evaluate.metrics import RowScores


@dataclass(frozen=True)
class SplitOutputs:
    y: np.ndarray
    """Labels (class indices, or regression targets) in storage order."""
    outputs: dict[str, RowScores | np.ndarray]
    """Each model's outputs: a classifier's ``RowScores``, a regression model's predicted
    target ``[n]`` (float32)."""
    columns: np.ndarray
    """``[n, len(columns)]``: the values of the requested feature columns (slices)."""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def nbytes(self) -> int:
        """Bytes held for the whole split: what evaluation's memory grows with."""
        return self.y.nbytes + self.columns.nbytes + sum(o.nbytes for o in self.outputs.values())


def collect_outputs(
    split,
    models: dict[str, Callable[[np.ndarray], np.ndarray]],
    columns: list[int],
    *,
    top_k: int | None,
    batch_rows: int = BATCH_ROWS,
) -> SplitOutputs:
    """Run every model of ``models`` (name -> ``fn(x) -> outputs``) on each batch of ``split``
    and keep the labels, the feature columns at indices ``columns`` and each model's reduced
    outputs: ``RowScores`` holding the ``top_k`` for classifiers (``fn`` gives logits), the
    predicted target for regression models (``top_k=None``; ``fn`` gives ``[rows, 1]``)."""
    ys: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    outs: dict[str, list] = {name: [] for name in models}
    for x, y in split_batches(split, batch_rows):
        y = np.asarray(y)
        ys.append(y)
        kept.append(x.reshape(len(x), -1)[:, columns])
        for name, fn in models.items():
            out = np.asarray(fn(x), dtype=np.float32)
            outs[name].append(out[:, 0] if top_k is None else RowScores.from_logits(y, out, top_k))
    reduced = {
        name: np.concatenate(parts) if top_k is None else RowScores.concat(parts)
        for name, parts in outs.items()
    }
    return SplitOutputs(np.concatenate(ys), reduced, np.concatenate(kept))
