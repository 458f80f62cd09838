"""Small synthetic datasets with every column kind, for tests, docs and demos.

table = example_table(1000, seed=1)            # x, count, color, review, pixels, label
shifted = example_table(1000, seed=2, shift=1.0)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from trainpipe.data.validation.io import array_field

COLORS = ("red", "green", "blue")
WORDS = ("good", "bad", "fine", "slow", "fast", "cheap", "nice", "broken", "ok", "great")


def example_table(n_rows: int, *, seed: int = 0, shift: float = 0.0) -> pa.Table:
    """Numeric (x, count), categorical (color), text (review), array (pixels 1x4x4), label.

    ``shift`` moves every distribution (means, category mix, brightness) by that many units.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n_rows)
    count = rng.poisson(3 + 2 * shift, n_rows).astype(np.int64)
    probs = np.array([0.5, 0.3, 0.2]) if not shift else np.array([0.2, 0.3, 0.5])
    color = np.asarray(COLORS)[rng.choice(3, n_rows, p=probs)]
    lengths = rng.integers(2, 12 + int(8 * shift), n_rows)
    vocab = np.asarray(WORDS)
    words = vocab[rng.integers(0, len(vocab), lengths.sum())]
    review = [" ".join(chunk) for chunk in np.split(words, np.cumsum(lengths)[:-1])]
    pixels = np.clip(rng.normal(6 + 4 * shift, 3, (n_rows, 1, 4, 4)).round(), 0, 16)
    field, array = array_field("pixels", pixels.astype(np.float32), [1, 4, 4])
    label = rng.integers(0, 3, n_rows).astype(np.int64)
    return pa.Table.from_arrays(
        [pa.array(x), pa.array(count), pa.array(color), pa.array(review), array, pa.array(label)],
        schema=pa.schema(
            [
                pa.field("x", pa.float64()),
                pa.field("count", pa.int64()),
                pa.field("color", pa.string()),
                pa.field("review", pa.string()),
                field,
                pa.field("label", pa.int64()),
            ]
        ),
    )
