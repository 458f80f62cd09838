"""The promotion gate: what a model must reach before it is registered and deployed, and how
evaluation compares it with the champion (bootstrap, slices).

    gate:
      metric: accuracy          # primary metric
      min_value: 0.85           # absolute threshold on it
      max_log_loss: 0.5         # optional thresholds (null disables)
      max_ece: 0.08
      min_improvement: 0.0      # challenger - champion on the primary metric
      max_slice_regression: 0.1 # no slice may lose more accuracy than this vs the champion
      slice_columns: [age]      # tables only; classes are always slices
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainpipe.configbase import Section

PrimaryMetric = Literal["accuracy", "macro_f1", "macro_precision", "macro_recall", "top_k_accuracy"]


class GateConfig(Section):
    metric: PrimaryMetric = "accuracy"
    """Primary metric on the test split: the gate's threshold and the champion comparison use
    it. All choices are higher-is-better and lie in [0, 1]."""

    min_value: float = Field(0.85, ge=0.0, le=1.0)
    """The primary metric must reach at least this value (classification)."""

    min_r2: float = Field(0.0, ge=-1.0, le=1.0)
    """Regression: the test R^2 (the primary metric of a regression model) must reach at least
    this; 0.0 means "better than always predicting the training mean"."""

    max_rmse: float | None = Field(None, gt=0.0)
    """Regression: if set, the test RMSE (in the target's units) must not exceed this."""

    max_log_loss: float | None = Field(None, gt=0.0)
    """If set, the test log loss (nats per example) must not exceed this."""

    max_ece: float | None = Field(None, gt=0.0, le=1.0)
    """If set, the expected calibration error (15 equal-width confidence bins) must not
    exceed this."""

    min_improvement: float = Field(0.0, ge=-1.0, le=1.0)
    """The challenger's primary metric minus the champion's, both on this run's test split, must
    be at least this. 0.0 means "not worse"; a small positive value demands a real gain; a
    negative value tolerates a small loss. Without a champion (the first model) the rule holds."""

    require_confident_improvement: bool = False
    """Also require the lower end of the paired bootstrap interval of (challenger - champion)
    to reach ``min_improvement``, so a gain that may be resampling noise is not enough."""

    max_slice_regression: float | None = Field(0.1, ge=0.0, le=1.0)
    """No guarded slice's accuracy may fall more than this below the champion's on the same
    slice. Guarded: every slice with at least ``min_slice_examples`` examples. None disables."""

    min_slice_examples: int = Field(20, ge=1)
    """Slices with fewer test examples are reported but not guarded: their accuracy is too noisy
    to block a promotion."""

    slice_columns: list[str] = Field(default_factory=list)
    """Feature columns (tables) to slice by, in addition to the per-class slices. A column with
    at most ``slice_buckets`` distinct test values gets one slice per value, otherwise
    ``slice_buckets`` quantile ranges."""

    slice_buckets: int = Field(4, ge=2, le=100)
    """Number of value ranges for a numeric slice column."""

    max_gap_to_linear: float | None = Field(0.01, ge=0.0, le=1.0)
    """The network's primary metric may fall at most this far below the linear baseline's
    (logistic regression on the same features, labels and test split): a deep network must at
    least reach a linear model, or optimization needs fixing first. The default tolerates a gap
of 0.01 (accuracy or R^2), about the noise of a few hundred test examples. None disables."""

    max_perplexity: float | None = Field(None, gt=1.0)
    """Language-model DAG: the pretrained language model's test perplexity must not exceed
    this (a model that did not learn the corpus is not promoted, whatever the classifier
    scores). None disables; ignored when no language model was pretrained in the run."""

    bootstrap_resamples: int = Field(1000, ge=0, le=100_000)
    """Resamples of the test split for confidence intervals (0 skips them; then
    ``require_confident_improvement`` cannot be used)."""

    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Coverage of the bootstrap intervals."""

    seed: int = 0
    """Seed of the bootstrap resampling, so a rerun reproduces the intervals exactly."""

    top_k: int = Field(3, ge=1)
    """k of the top-k accuracy."""

    @model_validator(mode="after")
    def _check(self) -> GateConfig:
        if self.require_confident_improvement and self.bootstrap_resamples == 0:
            raise ValueError(
                "require_confident_improvement needs bootstrap intervals; set "
                "bootstrap_resamples > 0 (e.g. 1000) or turn it off"
            )
        duplicates = sorted({c for c in self.slice_columns if self.slice_columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"slice_columns lists {duplicates} more than once; list each once")
        return self
