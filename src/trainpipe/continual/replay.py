"""Replay: mix new examples with a seeded sample of earlier accepted ones, against forgetting.

n = replay_count(len(new), len(pool), fraction=0.5)   # 0.5 -> as many old as new
train = mix(new, replay_sample(pool, n, seed=0))
"""

from __future__ import annotations

import numpy as np

from trainpipe.data.datasets import Split


def replay_count(num_new: int, pool_size: int, fraction: float) -> int:
    """Replayed examples so that they make up ``fraction`` of the mix, capped by the pool."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"replay fraction {fraction} must lie in [0, 1)")
    wanted = round(num_new * fraction / (1.0 - fraction))
    return min(wanted, pool_size)


def replay_sample(pool: Split, count: int, *, seed: int) -> Split:
    """``count`` examples of ``pool`` without replacement, seeded."""
    if count == 0:
        return pool.subset(np.arange(0))
    rng = np.random.default_rng(seed)
    return pool.subset(np.sort(rng.choice(len(pool), size=count, replace=False)))


def concat(*splits: Split) -> Split:
    return Split(
        np.concatenate([s.x for s in splits]).astype(np.float32),
        np.concatenate([s.y for s in splits]).astype(np.int64),
    )


def mix(new: Split, replayed: Split) -> Split:
    return concat(new, replayed)
