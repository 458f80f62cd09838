"""A split as batches in storage order, whether it is arrays in memory or streamed shards.

    for x, y in split_batches(dataset.test, batch_rows=4096):
        ...

Stages that score a whole split (evaluate, deploy) read it this way, so their memory follows
the batch and what they keep per example, not the split's features. Arrays are one batch
source among others: an in-memory split gives slices of its arrays, a streamed split gives its
shards' rows in storage order (no shuffling, read in this process).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from trainpipe.data.streaming import StreamSplit, stream_loader

BATCH_ROWS = 4096


def split_batches(split, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) batches of ``split`` in storage order, at most ``batch_rows`` rows each."""
    if isinstance(split, StreamSplit):
        for x, y in stream_loader(split, epoch=0, batch_size=batch_rows, shuffle=False, workers=0):
            yield x.numpy(), y.numpy()
        return
    for start in range(0, len(split), batch_rows):
        yield split.x[start : start + batch_rows], split.y[start : start + batch_rows]
