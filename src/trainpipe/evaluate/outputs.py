"""Every model's outputs on one split, computed batch by batch in one pass over the data.

    outputs = collect_outputs(dataset.test, {"challenger": fn, "champion": fn2}, columns=[3])
    outputs.y, outputs.outputs["challenger"], outputs.columns

The metrics, bootstrap intervals, slices and the champion comparison are functions of the
labels and each model's outputs per example (a paired bootstrap and quantile slices need them
per example), never of the features. So evaluation streams the features once, in batches, and
keeps ``1 + outputs + slice columns`` numbers per example: a few bytes per row where a table
row has hundreds, and the same code for an in-memory split (one batch source) and a streamed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainpipe.data.batches import BATCH_ROWS, split_batches


@dataclass(frozen=True)
class SplitOutputs:
    y: np.ndarray
    """Labels (class indices, or regression targets) in storage order."""
    outputs: dict[str, np.ndarray]
    """Each model's outputs ``[n, outputs]`` (logits, or the predicted target), float32."""
    columns: np.ndarray
    """``[n, len(columns)]``: the values of the requested feature columns (slices)."""

    def __len__(self) -> int:
        return len(self.y)


def collect_outputs(
    split,
    models: dict[str, Callable[[np.ndarray], np.ndarray]],
    columns: list[int],
    batch_rows: int = BATCH_ROWS,
) -> SplitOutputs:
    """Run every model of ``models`` (name -> ``fn(x) -> outputs``) on each batch of ``split``
    and keep the outputs, the labels and the feature columns at indices ``columns``."""
    ys: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    outs: dict[str, list[np.ndarray]] = {name: [] for name in models}
    for x, y in split_batches(split, batch_rows):
        ys.append(np.asarray(y))
        kept.append(x.reshape(len(x), -1)[:, columns])
        for name, fn in models.items():
            outs[name].append(np.asarray(fn(x), dtype=np.float32))
    return SplitOutputs(
        np.concatenate(ys),
        {name: np.concatenate(parts) for name, parts in outs.items()},
        np.concatenate(kept),
    )
