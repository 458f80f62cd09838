"""Drift and skew between a reference table and current data, per feature.

    results = table_drift(reference, current, schema, split="train")
    result = embedding_drift(reference_embeddings, current_embeddings, threshold_auc=0.75)

Metrics (thresholds per feature in the schema, ``drift`` / ``drift_defaults``):

- PSI and Jensen-Shannon distance between histograms: categories by value; numbers, text
  lengths and array elements over ten bins at the reference's deciles (equal mass, so both
  metrics see the bulk of the distribution rather than the tails).
- Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs) for numbers, text
  lengths and, for arrays (images), each example's mean value.
- Arrays also report the largest shift of a per-position mean (a 'mean image' difference) in
  reference standard deviations, which points at where in the image the change is.
- Embeddings: ROC AUC of a cross-validated logistic-regression classifier that tries to tell the
  reference from the current embeddings; 0.5 means indistinguishable, whatever their scale.

Distances are biased upwards on small samples (two halves of one random split of 36 and 115
rows show PSI above 0.25 by chance), so a feature counts as drifted only when a distance is above
its threshold *and* a sample-size-aware test says the samples differ (p-value at most
``max_p_value``: the KS test's for numbers, lengths and arrays, a chi-square test's for
categories). A distance above its threshold without significance is reported as inconclusive:
the sample is too small to tell.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from trainpipe.data.validation.schema import DriftThresholds, Schema, dtype_family
from trainpipe.data.validation.stats import column_kind, finite_values

PSI_EPSILON = 1e-4
# KS on more samples than this changes the statistic by < 0.003 and only costs sorting time.
MAX_KS_SAMPLES = 200_000
MIN_ROWS = 20
QUANTILE_BINS = 10


class DriftResult(BaseModel):
    """Drift of one feature in one split against the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split: str | None
    column: str
    kind: str
    metrics: dict[str, float]
    thresholds: dict[str, float | None]
    drifted: bool
    exceeded: list[str]
    """Metrics above their thresholds."""
    n_reference: int
    n_current: int
    details: dict[str, Any] = {}


# ---- metrics --------------------------------------------------------------------------------


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index; empty bins get PSI_EPSILON mass so the log stays finite."""
    p = _normalize(reference_counts)
    q = _normalize(current_counts)
    return float(np.sum((q - p) * np.log(q / p)))


def _normalize(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    p = counts / total if total else np.full(len(counts), 1 / max(len(counts), 1))
    p = np.maximum(p, PSI_EPSILON)
    return p / p.sum()


def js_distance(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2: sqrt of the JS divergence, in [0, 1]."""
    p = np.asarray(reference_counts, dtype=np.float64)
    q = np.asarray(current_counts, dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(math.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value."""
    rng = np.random.default_rng(0)
    a = _subsample(reference, rng)
    b = _subsample(current, rng)
    a.sort()
    b.sort()
    both = np.concatenate([a, b])
    gap = np.abs(
        np.searchsorted(a, both, side="right") / len(a)
        - np.searchsorted(b, both, side="right") / len(b)
    )
    d = float(gap.max())
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    return d, _kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(x) > MAX_KS_SAMPLES:
        return rng.choice(x, MAX_KS_SAMPLES, replace=False)
    return np.array(x, dtype=np.float64)


def _kolmogorov_sf(t: float) -> float:
    """P(K > t) for the Kolmogorov distribution (Numerical Recipes' probks)."""
    if t < 0.2:
        return 1.0
    k = np.arange(1, 101)
    terms = 2 * (-1.0) ** (k - 1) * np.exp(-2 * k**2 * t**2)
    return float(min(1.0, max(0.0, terms.sum())))


def chi_square_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """p-value of a chi-square test that both count vectors come from one distribution."""
    from scipy.stats import chi2_contingency

    table = np.array([reference_counts, current_counts], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0  # one category in both: nothing can differ
    return float(chi2_contingency(table, correction=False).pvalue)


def quantile_bin_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, ...]:
    """Counts of both samples in bins cut at the reference's deciles."""
    qs = np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]
    edges = np.unique(np.quantile(reference, qs)) if len(reference) else np.array([])
    ref_bins = np.searchsorted(edges, reference, side="right")
    cur_bins = np.searchsorted(edges, current, side="right")
    size = len(edges) + 1
    return np.bincount(ref_bins, minlength=size), np.bincount(cur_bins, minlength=size)


# ---- per feature ----------------------------------------------------------------------------


def table_drift(
    reference: pa.Table, current: pa.Table, schema: Schema | None, *, split: str | None = None
) -> list[DriftResult]:
    """Drift of every column present in both tables with the same type family."""
    results = []
    for field in current.schema:
        name = field.name
        if name not in reference.column_names:
            continue
        ref_field = reference.schema.field(name)
        if dtype_family(ref_field.type) != dtype_family(field.type) and not (
            {dtype_family(ref_field.type), dtype_family(field.type)} <= {"int", "float"}
        ):
            continue  # a type change is the wrong_type check's business
        kind = column_kind(ref_field, reference.column(name), schema)
        thresholds = schema.thresholds(name) if schema is not None else DriftThresholds()
        result = column_drift(
            reference.column(name), current.column(name), kind, thresholds, name, split
        )
        if result is not None:
            results.append(result)
    return results


def column_drift(
    reference: pa.ChunkedArray,
    current: pa.ChunkedArray,
    kind: str,
    thresholds: DriftThresholds,
    name: str,
    split: str | None,
) -> DriftResult | None:
    details: dict[str, Any] = {}
    if kind == "categorical":
        ref_counts, cur_counts, labels = _category_counts(reference, current)
        metrics = {"psi": psi(ref_counts, cur_counts), "js": js_distance(ref_counts, cur_counts)}
        n_ref, n_cur = int(ref_counts.sum()), int(cur_counts.sum())
        details["categories"] = len(labels)
        p_value = chi_square_p_value(ref_counts, cur_counts)
    else:
        if kind == "numeric":
            ref, cur = finite_values(reference), finite_values(current)
            by_example = (ref, cur)
        elif kind == "text":
            ref = finite_values(pc.utf8_length(reference))
            cur = finite_values(pc.utf8_length(current))
            by_example = (ref, cur)
        elif kind == "array" and pa.types.is_fixed_size_list(current.type):
            if reference.type.list_size != current.type.list_size:
                return None  # the array_shape check reports this
            ref_m, cur_m = _matrix(reference), _matrix(current)
            ref, cur = ref_m[np.isfinite(ref_m)], cur_m[np.isfinite(cur_m)]
            by_example = (np.nanmean(ref_m, axis=1), np.nanmean(cur_m, axis=1))
            by_example = tuple(x[np.isfinite(x)] for x in by_example)
            if len(ref_m) and len(cur_m):
                shift = np.abs(np.nanmean(cur_m, axis=0) - np.nanmean(ref_m, axis=0))
                scale = float(np.nanstd(ref_m)) or 1.0
                details["max_position_mean_shift_std"] = float(np.nanmax(shift) / scale)
                details["position_of_max_shift"] = int(np.nanargmax(shift))
        else:
            return None
        n_ref, n_cur = len(by_example[0]), len(by_example[1])
        if n_ref < MIN_ROWS or n_cur < MIN_ROWS:
            return None
        ref_counts, cur_counts = quantile_bin_counts(ref, cur)
        d, p_value = ks_statistic(*by_example)
        metrics = {
            "psi": psi(ref_counts, cur_counts),
            "js": js_distance(ref_counts, cur_counts),
            "ks": d,
        }
    return drift_result(split, name, kind, metrics, thresholds, p_value, n_ref, n_cur, details)


def drift_result(
    split: str | None,
    column: str,
    kind: str,
    metrics: dict[str, float],
    thresholds: DriftThresholds,
    p_value: float,
    n_reference: int,
    n_current: int,
    details: dict[str, Any] | None = None,
) -> DriftResult | None:
    """The drift rule, for in-memory and streamed data alike: a feature drifted when a distance
    is above its threshold *and* the samples differ significantly (``p_value`` at most
    ``max_p_value``); above a threshold without significance is inconclusive (too few rows to
    tell). None when either side has fewer than MIN_ROWS rows."""
    if n_reference < MIN_ROWS or n_current < MIN_ROWS:
        return None
    details = {**(details or {}), "p_value": p_value}
    limits = {"psi": thresholds.psi, "js": thresholds.js, "ks": thresholds.ks}
    limits = {k: v for k, v in limits.items() if k in metrics}
    exceeded = [k for k, v in metrics.items() if limits.get(k) is not None and v > limits[k]]
    if exceeded and thresholds.max_p_value is not None and p_value > thresholds.max_p_value:
        details["inconclusive"] = (
            f"{', '.join(exceeded)} above threshold but the samples do not differ significantly "
            f"(p={p_value:.2g} > {thresholds.max_p_value:g} with {n_reference} reference and "
            f"{n_current} current rows): the sample is too small to tell"
        )
        exceeded = []
    return DriftResult(
        split=split,
        column=column,
        kind=kind,
        metrics=metrics,
        thresholds=limits,
        drifted=bool(exceeded),
        exceeded=exceeded,
        n_reference=n_reference,
        n_current=n_current,
        details=details,
    )


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks().drop_null()
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(len(array), array.type.list_size)


def _category_counts(
    reference: pa.ChunkedArray, current: pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    ref = pc.value_counts(reference.drop_null())
    cur = pc.value_counts(current.drop_null())
    ref_map = dict(
        zip(ref.field("values").to_pylist(), ref.field("counts").to_pylist(), strict=True)
    )
    cur_map = dict(
        zip(cur.field("values").to_pylist(), cur.field("counts").to_pylist(), strict=True)
    )
    labels = list(ref_map) + [v for v in cur_map if v not in ref_map]
    return (
        np.array([ref_map.get(v, 0) for v in labels], dtype=np.float64),
        np.array([cur_map.get(v, 0) for v in labels], dtype=np.float64),
        labels,
    )


# ---- embeddings -----------------------------------------------------------------------------


def embedding_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    threshold_auc: float | None = 0.75,
    split: str | None = None,
    max_samples: int = 2000,
    seed: int = 0,
) -> DriftResult:
    """Drift of encoder embeddings (n, d): can a linear classifier tell the two sets apart?

    Reports the cross-validated ROC AUC (0.5 = no drift), the cosine distance between the two
    mean embeddings, and the mean shift in reference standard deviations.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    current = np.asarray(current, dtype=np.float64).reshape(len(current), -1)
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"embedding widths differ: reference {reference.shape[1]}, current "
            f"{current.shape[1]}; embed both with the same encoder"
        )
    rng = np.random.default_rng(seed)
    ref = reference[rng.permutation(len(reference))[:max_samples]]
    cur = current[rng.permutation(len(current))[:max_samples]]
    mean_ref, mean_cur = ref.mean(axis=0), cur.mean(axis=0)
    norms = np.linalg.norm(mean_ref) * np.linalg.norm(mean_cur)
    cosine = float(1 - mean_ref @ mean_cur / norms) if norms else 0.0
    shift = float(np.linalg.norm(mean_cur - mean_ref) / (np.sqrt(ref.var(axis=0).sum()) or 1.0))
    auc = 0.5
    if min(len(ref), len(cur)) >= MIN_ROWS:
        from sklearn.metrics import roc_auc_score

        x = np.concatenate([ref, cur])
        y = np.concatenate([np.zeros(len(ref)), np.ones(len(cur))])
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
        scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
        auc = float(roc_auc_score(y, scores))
    exceeded = ["embedding_auc"] if threshold_auc is not None and auc > threshold_auc else []
    return DriftResult(
        split=split,
        column="embeddings",
        kind="embedding",
        metrics={"embedding_auc": auc, "mean_cosine_distance": cosine, "mean_shift_std": shift},
        thresholds={"embedding_auc": threshold_auc},
        drifted=bool(exceeded),
        exceeded=exceeded,
        n_reference=len(reference),
        n_current=len(current),
        details={"dimensions": int(reference.shape[1])},
    )
