"""Streaming validation: mergeable sketches and shard-by-shard checks naming the shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from trainpipe.data.shards import discover_shards, split_shards, write_shards
from trainpipe.data.validation.sketches import ColumnSketch, DistinctSketch, QuantileSketch
from trainpipe.data.validation.streaming import (
    SCHEMA_SAMPLE_ROW_GROUPS,
    sampled_row_groups,
    validate_shards,
)


def test_merged_sketches_match_the_whole_data():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=50_000)
    parts = np.array_split(values, 7)
    merged = ColumnSketch()
    for part in parts:
        one = ColumnSketch()
        one.update_numeric(part)
        merged.merge(one)
    assert merged.finite == len(values)
    assert np.isclose(merged.mean, values.mean()) and np.isclose(merged.std, values.std())
    assert merged.min == values.min() and merged.max == values.max()
    for q, estimate in zip(
        [0.01, 0.5, 0.99], merged.quantile.quantiles([0.01, 0.5, 0.99]), strict=True
    ):
        rank = (values <= estimate).mean()
        assert abs(rank - q) < 0.02, (q, rank)
    kept = sum(len(level) for level in merged.quantile.levels)
    assert kept < 3000  # bounded: a few hundred items per level, not 50k


def test_quantile_sketch_memory_does_not_grow_with_rows():
    sketch = QuantileSketch()
    sizes = []
    for _ in range(4):
        sketch.update(np.random.default_rng(1).normal(size=100_000))
        sizes.append(sum(len(v) for v in sketch.levels))
    assert max(sizes) < 5000


def test_distinct_sketch_estimates_within_a_few_percent():
    a, b = DistinctSketch(), DistinctSketch()
    a.update(np.arange(0, 60_000, dtype=np.uint64))
    b.update(np.arange(30_000, 100_000, dtype=np.uint64))
    a.merge(b)
    assert abs(a.estimate() - 100_000) / 100_000 < 0.05
    small = DistinctSketch()
    small.update(np.array([5, 5, 7, 9], dtype=np.uint64))
    assert small.estimate() == 3


def test_shard_anomaly_names_the_shard_and_stats_cover_every_row(tmp_path):
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=n)
    # Row 1050 lives in shard part-00005 (200 rows per shard), a test shard: a NaN in the
    # training shards' sampled row groups would make the inferred schema allow NaN (as in memory).
    x[1050] = np.nan
    table = pa.table({"x": x, "label": rng.integers(0, 3, n)})
    write_shards(table, str(tmp_path), rows_per_shard=200, row_group_rows=64)
    shards = discover_shards(str(tmp_path))
    splits = split_shards(shards.shards, validation_fraction=0.2, test_fraction=0.2, seed=0)
    report, summaries = validate_shards(shards, splits, label_column="label", workers=2)
    nan = [a for a in report.anomalies if a.check == "nan"]
    assert len(nan) == 1 and "shard part-00005.parquet" in nan[0].message
    assert sum(s.rows for s in summaries.values()) == n
    labels = sum((s.labels for s in summaries.values()), start=type(summaries["train"].labels)())
    assert dict(labels) == {
        k: int(v) for k, v in zip(*np.unique(table["label"], return_counts=True), strict=True)
    }
    assert report.splits["train"].columns["x"].count == sum(s.rows for s in splits["train"])


def drift_report(tmp_path, reference, current, rows_per_shard, held_out_fraction):
    """Validation of ``current`` (as shards) against ``reference`` (500-row shards)."""
    write_shards(reference, str(tmp_path / "ref"), rows_per_shard=500)
    write_shards(current, str(tmp_path / "cur"), rows_per_shard=rows_per_shard)
    shards = discover_shards(str(tmp_path / "cur"))
    splits = split_shards(
        shards.shards,
        validation_fraction=held_out_fraction,
        test_fraction=held_out_fraction,
        seed=0,
    )
    reference_shards = discover_shards(str(tmp_path / "ref"))
    return validate_shards(shards, splits, label_column="label", reference=reference_shards)[0]


def test_drift_against_reference_shards(tmp_path):
    rng = np.random.default_rng(0)
    reference = pa.table({"x": rng.normal(size=2000), "label": rng.integers(0, 2, 2000)})
    shifted = pa.table({"x": rng.normal(loc=1.5, size=2000), "label": rng.integers(0, 2, 2000)})
    report = drift_report(tmp_path, reference, shifted, 500, 0.25)
    drifted = {(r.split, r.column) for r in report.drift if r.drifted}
    assert ("train", "x") in drifted and ("train", "label") not in drifted


def test_validate_cli_on_a_shard_prefix(tmp_path, capsys):
    from trainpipe.data.validation.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    table = pa.table({"x": x, "label": rng.integers(0, 2, 1000)})
    write_shards(table, str(tmp_path / "s"), rows_per_shard=25)
    # The inferred schema allows infinities its sampled row groups hold (as in memory, where
    # it is inferred from all the data): put one in a shard the sample skips.
    sampled = {
        s.name
        for s, _ in sampled_row_groups(
            discover_shards(str(tmp_path / "s")).shards, SCHEMA_SAMPLE_ROW_GROUPS
        )
    }
    skipped = next(i for i in range(40) if f"part-{i:05d}.parquet" not in sampled)
    x[skipped * 25 + 3] = np.inf
    table = table.set_column(0, "x", pa.array(x))
    write_shards(table, str(tmp_path / "s"), rows_per_shard=25)
    assert main([str(tmp_path / "s"), "--label-column", "label"]) == 1
    out = capsys.readouterr().out
    assert "BLOCKING" in out and f"shard part-{skipped:05d}.parquet" in out and "check=inf" in out
    (tmp_path / "s" / "part-00001.parquet").unlink()
    assert main([str(tmp_path / "s")]) == 1
    assert "part-00001.parquet is listed in shards.json but missing" in capsys.readouterr().err


def test_streamed_drift_on_small_splits_is_inconclusive_like_in_memory(tmp_path):
    """Splits of 25-50 rows from the reference's distribution: PSI exceeds its threshold by
    chance; the shared rule (chi-square over the reference's quantile bins) calls it
    inconclusive instead of drift, as the in-memory validation does."""
    rng = np.random.default_rng(0)
    reference = pa.table({"x": rng.normal(size=200), "label": rng.integers(0, 2, 200)})
    same = pa.table({"x": rng.normal(size=150), "label": rng.integers(0, 2, 150)})
    report = drift_report(tmp_path, reference, same, 25, 0.2)
    assert not any(r.drifted for r in report.drift)
    unsure = [r for r in report.drift if "inconclusive" in r.details]
    assert unsure and all(r.metrics["psi"] > r.thresholds["psi"] for r in unsure)
    assert all(r.details["p_value"] > 0.01 for r in unsure)
    assert not [a for a in report.anomalies if a.check == "drift"]


def rarely_missing_shards(tmp_path, drifted: int | None):
    """20 shards of 500 rows in 100-row row groups; ``x`` is complete in each shard's first row
    group (whichever shard a schema is inferred from) and about 1% missing in the others; shard
    ``drifted`` (if any) has 40% missing."""
    rng = np.random.default_rng(3)
    n = 10_000
    x = rng.normal(size=n)
    missing = rng.random(n) < 0.0125
    missing[(np.arange(n) % 500) < 100] = False
    if drifted is not None:
        rows = np.arange(drifted * 500, (drifted + 1) * 500)
        missing[rows] = rng.random(500) < 0.4
    table = pa.table(
        {"x": pa.array(x, mask=missing), "label": rng.integers(0, 2, n)},
    )
    write_shards(table, str(tmp_path / "s"), rows_per_shard=500, row_group_rows=100)
    return str(tmp_path / "s")


def test_a_rarely_missing_column_is_not_held_to_its_first_row_group(tmp_path, capsys):
    # The first row group has no missing x: a schema from it alone allowed 0% and flagged every
    # later shard. Inferred from row groups across the shards, the limit has room for 1%.
    from trainpipe.data.validation.cli import main

    prefix = rarely_missing_shards(tmp_path, drifted=None)
    shards = discover_shards(prefix)
    splits = split_shards(shards.shards, validation_fraction=0.2, test_fraction=0.2, seed=0)
    report, _ = validate_shards(shards, splits, label_column="label", workers=2)
    assert [a.message for a in report.anomalies] == []
    limit = report.data_schema.column("x").max_missing_fraction
    assert 0.03 < limit < 0.06  # 2 x ~1% + 3%, the in-memory headroom
    assert main([prefix, "--label-column", "label"]) == 0
    capsys.readouterr()


def test_a_shard_with_many_missing_values_is_one_line_naming_it(tmp_path, capsys):
    from trainpipe.data.validation.cli import main

    prefix = rarely_missing_shards(tmp_path, drifted=13)
    assert main([prefix, "--label-column", "label"]) == 1
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if "check=missing_fraction" in line]
    assert len(lines) == 1, lines
    assert "shard part-00013.parquet" in lines[0] and "more shard" not in lines[0]


def test_schema_sample_spreads_over_every_shard():
    from trainpipe.data.shards import ShardInfo

    members = [ShardInfo(f"part-{i:05d}.parquet", 300, (100, 100, 100)) for i in range(100)]
    picks = sampled_row_groups(members, SCHEMA_SAMPLE_ROW_GROUPS)
    assert len(picks) == SCHEMA_SAMPLE_ROW_GROUPS
    assert (picks[0][0].name, picks[0][1]) == ("part-00000.parquet", 0)
    assert (picks[-1][0].name, picks[-1][1]) == ("part-00099.parquet", 2)
    assert len({s.name for s, _ in picks}) == SCHEMA_SAMPLE_ROW_GROUPS
    few = sampled_row_groups(members[:2], SCHEMA_SAMPLE_ROW_GROUPS)
    assert [(s.name[-9:-8], g) for s, g in few] == [(str(i), g) for i in (0, 1) for g in range(3)]
