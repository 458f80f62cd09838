"""Seeded bootstrap confidence intervals, paired when two models are scored on the same data.

    fn = scalar_metric_fn("accuracy")
    ci = bootstrap_ci(y, probs, fn, num_resamples=1000, confidence=0.95, seed=0)
    cmp = paired_bootstrap(y, challenger_probs, champion_probs, fn, ...)
    cmp["difference"].lower > 0     # challenger better on (almost) every resample

Paired: each resample draws one set of example indices and scores both models on it, so the
interval of the difference reflects how the two models differ on the same examples rather than
the (much larger) noise of drawing a test set. Intervals are percentile intervals; the point
estimate is the metric on the full data, not the mean of the resamples. A model's outputs are
its ``[n, C]`` probabilities or its ``RowScores`` (anything indexable by example, as the metric
takes it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from trainpipe.evaluate.metrics import Outputs

MetricFn = Callable[[np.ndarray, Outputs], float]


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper


def _resamples(n: int, num_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(num_resamples):
        yield rng.integers(0, n, size=n)


def _interval(estimate: float, values: list[float], confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2 * 100
    lower, upper = np.percentile(values, [tail, 100 - tail])
    return Interval(float(estimate), float(lower), float(upper), confidence)


def bootstrap_ci(
    y_true: np.ndarray,
    probs: Outputs,
    metric: MetricFn,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    values = [metric(y_true[i], probs[i]) for i in _resamples(len(y_true), num_resamples, seed)]
    return _interval(metric(y_true, probs), values, confidence)


def paired_bootstrap(
    y_true: np.ndarray,
    challenger: Outputs,
    champion: Outputs,
    metric: MetricFn,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals for each model and for ``challenger - champion`` from the same resamples."""
    a_values, b_values = [], []
    for i in _resamples(len(y_true), num_resamples, seed):
        a_values.append(metric(y_true[i], challenger[i]))
        b_values.append(metric(y_true[i], champion[i]))
    a, b = metric(y_true, challenger), metric(y_true, champion)
    diff = np.subtract(a_values, b_values).tolist()
    return {
        "challenger": _interval(a, a_values, confidence),
        "champion": _interval(b, b_values, confidence),
        "difference": _interval(a - b, diff, confidence),
    }
