"""How a scheduled continual run consumes new partitions and decides what to train.

continual:
  source: s3://bucket/incoming          # partitions arrive here, ordered by name
  policy: full_retrain_on_drift
  replay_fraction: 0.5
  max_forgetting: 0.02
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section


class ContinualConfig(Section):
    source: str | None = None
    """Prefix (file://, s3:// or a local path) whose children are the partitions: files or
    folders such as ``part-0001.parquet`` or ``2026-11-23/``, consumed in name order. None with
    ``trainpipe run --continual`` simulates arrivals of the built-in digits instead. With
    ``data.format: shards`` each partition's ``*.parquet`` files are shards, streamed."""

    policy: Literal["warm_start", "full_retrain_on_drift"] = "warm_start"
    """``warm_start`` always continues training the champion on new data plus replay;
    ``full_retrain_on_drift`` retrains from scratch (pretraining included) on all accepted data
    when a new partition's drift score exceeds ``drift_threshold``."""

    drift_threshold: float = Field(0.3, ge=0.0, le=1.0)
    """Drift score (largest Kolmogorov-Smirnov statistic over the columns, against the accepted
    data; with ``data.format: shards`` the largest Jensen-Shannon distance, as streamed
    validation has no KS) above which ``full_retrain_on_drift`` retrains from scratch."""

    replay_fraction: float = Field(0.5, ge=0.0, lt=1.0)
    """Share of the warm-start training set drawn from earlier accepted data (0.5: as many
    replayed examples as new ones), so the model does not forget; capped by what exists."""

    holdout_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    """Share of each new partition held out of training and added to the fixed test set."""

    max_forgetting: float | None = Field(0.02, ge=0.0, le=1.0)
    """Largest allowed drop of accuracy on the original (fixed) test set versus the champion;
    a challenger that forgets more is not promoted. None disables the bound."""

    warm_start_epochs: int = Field(5, ge=1, le=100_000)
    """Epochs of warm-start training (optimizer settings otherwise come from ``finetune``)."""

    warm_start_lr_scale: float = Field(0.5, gt=0.0, le=1.0)
    """Warm start uses ``finetune.lr`` times this: the champion is already close."""

    lease_ttl_s: float = Field(3600.0, gt=0.0)
    """How long a run's lease lasts; a crashed run's lease can be taken over after this."""

    seed: int = 0
    """Seed of the holdout split and the replay sample."""

    rebuild_reference: bool = False
    """With ``data.format: shards``: rebuild the stored drift reference (the merged summary of
    the accepted shards) by reading every accepted shard once, instead of reading the stored
    one; for a reference that was lost or corrupted. A state written before the reference was
    stored is rebuilt without it."""
