"""Drift: detected on shifted data, not on a resample of the same distribution."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from trainpipe.data.validation import (
    DriftThresholds,
    array_field,
    embedding_drift,
    infer_schema,
    load_digits_table,
    table_drift,
    validate_dataset,
)
from trainpipe.data.validation.drift import js_distance, ks_statistic, psi
from trainpipe.data.validation.synthetic import example_table

REFERENCE = example_table(1500, seed=1)
SCHEMA = infer_schema(REFERENCE, label_column="label")


def test_metrics_are_zero_for_identical_and_large_for_disjoint():
    counts = np.array([10.0, 20.0, 30.0])
    assert psi(counts, counts) == pytest.approx(0)
    assert js_distance(counts, counts) == pytest.approx(0)
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1)
    assert psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])) > 5
    d, p = ks_statistic(np.arange(100.0), np.arange(100.0) + 1000)
    assert d == 1.0 and p < 1e-6
    d, p = ks_statistic(
        np.random.default_rng(0).normal(size=2000), np.random.default_rng(1).normal(size=2000)
    )
    assert d < 0.06 and p > 0.01


def test_resample_does_not_drift():
    report = validate_dataset({"train": example_table(1000, seed=7)}, SCHEMA, REFERENCE)
    assert report.drift and not any(r.drifted for r in report.drift)
    assert report.anomalies == []
    assert report.checks()["drift"].verdict == "pass"


def test_shifted_data_drifts_in_every_column_kind():
    report = validate_dataset({"train": example_table(1000, seed=7, shift=1.0)}, SCHEMA, REFERENCE)
    drifted = {r.column for r in report.drift if r.drifted}
    assert {"x", "count", "color", "review", "pixels"} <= drifted
    anomaly = next(a for a in report.anomalies if a.column == "x")
    assert anomaly.check == "drift" and anomaly.severity == "warning"
    assert "split=train column=x check=drift: numeric distribution moved" in anomaly.message
    assert "ks " in anomaly.message and "> 0.15" in anomaly.message
    assert report.passed  # drift warns by default
    assert report.checks()["drift"].verdict == "warn"


def test_per_feature_thresholds_and_blocking_severity():
    data = SCHEMA.model_dump()
    for column in data["columns"]:
        if column["name"] == "x":
            column["drift"] = {"psi": None, "js": None, "ks": 0.9}
    data["severity"] = {"drift": "blocking"}
    schema = type(SCHEMA).model_validate(data)
    report = validate_dataset({"train": example_table(1000, seed=7, shift=1.0)}, schema, REFERENCE)
    x = next(r for r in report.drift if r.column == "x")
    assert not x.drifted and x.thresholds == {"psi": None, "js": None, "ks": 0.9}
    assert report.blocking and all(a.check == "drift" for a in report.blocking)


def test_digits_pixel_drift():
    digits = load_digits_table()
    order = np.random.default_rng(0).permutation(digits.num_rows)
    reference, current = digits.take(order[:1200]), digits.take(order[1200:])
    schema = infer_schema(reference, label_column="label")
    clean = table_drift(reference, current, schema, split="test")
    assert not any(r.drifted for r in clean)
    dimmed = pc.list_flatten(current.column("pixels")).to_numpy() * 0.6
    field, pixels = array_field("pixels", dimmed.reshape(-1, 1, 8, 8), [1, 8, 8])
    shifted = table_drift(reference, current.set_column(0, field, pixels), schema, split="test")
    result = next(r for r in shifted if r.column == "pixels")
    assert result.drifted and "ks" in result.exceeded
    assert result.details["max_position_mean_shift_std"] > 0.3


def test_embedding_drift_hook():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(600, 32))
    same = embedding_drift(reference, rng.normal(size=(400, 32)))
    assert not same.drifted and same.metrics["embedding_auc"] < 0.65
    moved = embedding_drift(reference, rng.normal(size=(400, 32)) + 0.5, split="test")
    assert moved.drifted and moved.metrics["embedding_auc"] > 0.9
    with pytest.raises(ValueError, match="embedding widths differ"):
        embedding_drift(reference, rng.normal(size=(10, 8)))


def test_embeddings_flow_through_validate_dataset():
    rng = np.random.default_rng(1)
    report = validate_dataset(
        {"train": example_table(300, seed=2)},
        SCHEMA,
        reference_embeddings=rng.normal(size=(300, 16)),
        embeddings={"train": rng.normal(size=(300, 16)) + 1.0},
    )
    (anomaly,) = report.anomalies
    assert anomaly.column == "embeddings" and anomaly.check == "drift"
    assert "embedding_auc" in anomaly.message


def test_default_thresholds_are_documented_values():
    assert DriftThresholds() == DriftThresholds(psi=0.25, js=0.2, ks=0.15, embedding_auc=0.75)


def test_small_samples_of_one_distribution_do_not_drift_and_features_are_counted_once():
    """Two random halves (36 vs 115 rows) of one table: distances exceed their thresholds by
    chance, the sample-size-aware test says it is too small to tell, and the summary counts
    features, not feature x split pairs."""
    whole = example_table(151, seed=3)
    order = np.random.default_rng(0).permutation(151)
    reference, small = whole.take(order[36:]), whole.take(order[:36])
    other = example_table(40, seed=4)
    report = validate_dataset({"a": small, "b": other}, SCHEMA, reference)
    assert not any(r.drifted for r in report.drift)
    unsure = [r for r in report.drift if "inconclusive" in r.details]
    assert unsure, [r.metrics for r in report.drift]  # the distances alone would have flagged
    assert "the sample is too small to tell" in unsure[0].details["inconclusive"]
    features = {r.column for r in report.drift}
    assert len(report.drift) > len(features)  # two splits per feature
    assert f"drift in 0 of {len(features)} features" in report.summary_line()
    assert "too small a sample to tell" in report.summary_line()

    shifted = validate_dataset(
        {"a": example_table(300, seed=5, shift=1.0), "b": example_table(300, seed=6, shift=1.0)},
        SCHEMA,
        reference,
    )
    drifted = {r.column for r in shifted.drift if r.drifted}
    assert f"drift in {len(drifted)} of {len(features)} features" in shifted.summary_line()


def test_one_drift_rule_decides_for_in_memory_and_streamed_data():
    from trainpipe.data.validation import drift, streaming
    from trainpipe.data.validation.drift import drift_result

    limits = DriftThresholds()
    metrics = {"psi": 0.6, "js": 0.1}
    significant = drift_result("train", "x", "numeric", metrics, limits, 0.001, 500, 500)
    assert significant.drifted and significant.exceeded == ["psi"]
    chance = drift_result("train", "x", "numeric", metrics, limits, 0.3, 30, 500)
    assert not chance.drifted and "too small to tell" in chance.details["inconclusive"]
    assert drift_result("train", "x", "numeric", metrics, limits, 0.001, 5, 500) is None
    no_test = DriftThresholds(max_p_value=None)
    assert drift_result("train", "x", "numeric", metrics, no_test, 0.3, 30, 500).drifted
    # Both validations call this one function (no second copy of the rule).
    assert streaming.drift_result is drift.drift_result
