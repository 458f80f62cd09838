"""A shard summary stored as JSON: exact round trip, merging stored summaries, and drift against a
stored summary equal to drift against the shards it summarizes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from trainpipe.data.shards import discover_shards, split_shards, write_shards
from trainpipe.data.validation import infer_schema
from trainpipe.data.validation.streaming import (
    ShardSummary,
    reference_summary,
    summarize_table,
    validate_shards,
)


def table(seed: int, rows: int = 3000, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, rows)
    x[::97] = np.nan  # NaN counts travel too
    return pa.table(
        {
            "x": x,
            "n": rng.integers(0, 1000, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.integers(0, 2, rows).astype(bool),
            "label": rng.integers(0, 3, rows),
        }
    )


def summary_of(t: pa.Table) -> ShardSummary:
    return summarize_table(t, infer_schema(table(0), label_column="label"), "train", "t")


def stored(summary: ShardSummary) -> ShardSummary:
    """Through JSON text, as the continual state stores it."""
    return ShardSummary.from_dict(json.loads(json.dumps(summary.to_dict())))


def test_a_stored_summary_reads_back_exactly_and_merges_as_the_original():
    a, b = summary_of(table(1)), summary_of(table(2))
    assert stored(a).to_dict() == a.to_dict()
    flags = stored(a).columns["flag"].categories
    assert flags == a.columns["flag"].categories and {type(k) for k in flags} == {bool}
    assert {type(k) for k in stored(a).labels} == {int}
    assert stored(a).merge(stored(b)).to_dict() == a.merge(b).to_dict()


def test_merged_stored_summaries_equal_the_summary_of_the_concatenation():
    parts = [table(seed, rows=2000) for seed in range(5)]
    total = ShardSummary()
    for part in parts:
        total = stored(stored(total).merge(summary_of(part)))
    whole = summary_of(pa.concat_tables(parts))
    assert total.rows == whole.rows == 10_000 and total.labels == whole.labels
    for name, sketch in whole.columns.items():
        got = total.columns[name]
        assert (got.count, got.missing, got.nan, got.finite) == (
            sketch.count,
            sketch.missing,
            sketch.nan,
            sketch.finite,
        )
        assert got.categories == sketch.categories
        # HyperLogLog merges by register maximum: exactly the sketch of the union.
        assert np.array_equal(got.distinct.registers, sketch.distinct.registers)
        assert np.isclose(got.mean, sketch.mean) and np.isclose(got.m2, sketch.m2)
    values = pa.concat_tables(parts).column("x").to_numpy()
    values = np.sort(values[np.isfinite(values)])
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    for q, estimate in zip(qs, total.columns["x"].quantile.quantiles(qs), strict=True):
        rank = np.searchsorted(values, estimate, side="right") / len(values)
        assert abs(rank - q) < 0.02, (q, rank)


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"format": "something else"}, "not a trainpipe.shard-summary"),
        ({"format": "trainpipe.shard-summary", "version": 99}, "version 99"),
        ({"format": "trainpipe.shard-summary", "version": 1, "rows": 3}, "malformed"),
    ],
)
def test_a_record_that_is_not_a_summary_is_refused(record, problem):
    with pytest.raises(ValueError, match=problem):
        ShardSummary.from_dict(record)


def test_drift_against_a_stored_summary_equals_drift_against_the_shards(tmp_path):
    """The reference as continual builds it (the bootstrap's summary, merged with a later
    partition's, through JSON each time) against the same shards read again."""
    first, second = table(10, rows=4000), table(11, rows=2000)
    write_shards(first, str(tmp_path / "ref/a"), rows_per_shard=800)
    write_shards(second, str(tmp_path / "ref/b"), rows_per_shard=500)
    write_shards(pa.concat_tables([first, second]), str(tmp_path / "all"), rows_per_shard=700)
    schema = infer_schema(first, label_column="label")
    ref_a, ref_b = (discover_shards(str(tmp_path / "ref" / p)) for p in "ab")
    summary = stored(
        stored(reference_summary(ref_a, schema)).merge(reference_summary(ref_b, schema))
    )
    shards = discover_shards(str(tmp_path / "all"))
    for shift, name in [(0.0, "same"), (0.8, "shifted")]:
        write_shards(table(12, rows=3000, shift=shift), str(tmp_path / name), rows_per_shard=600)
        current = discover_shards(str(tmp_path / name))
        splits = split_shards(current.shards, validation_fraction=0.2, test_fraction=0.2, seed=0)
        by_shards, _ = validate_shards(current, splits, schema, reference=shards)
        by_summary, _ = validate_shards(current, splits, schema, reference=summary)
        assert by_summary.reference.num_rows == by_shards.reference.num_rows == 6000
        results = {(r.split, r.column): r for r in by_shards.drift}
        assert set(results) == {(r.split, r.column) for r in by_summary.drift}
        for r in by_summary.drift:
            expected = results[(r.split, r.column)]
            assert r.drifted == expected.drifted, (name, r, expected)
            for metric, value in r.metrics.items():
                assert abs(value - expected.metrics[metric]) < 0.02, (name, r.column, metric)
        assert any(r.drifted for r in by_summary.drift) == (name == "shifted")


def test_values_json_cannot_hold_are_refused_naming_the_column():
    import datetime
    from collections import Counter

    summary = summary_of(table(3))
    summary.columns["colour"].categories = Counter({datetime.date(2026, 11, 1): 3})
    with pytest.raises(ValueError, match="column 'colour': cannot store category values"):
        summary.to_dict()
