"""Validate a sharded source shard by shard, in parallel, with memory that does not grow with it.

    report = validate_shards(shard_set, {"train": [...], "validation": [...], "test": [...]},
                             schema=None, label_column="label", workers=2)

Every row group goes through the same per-table checks as in-memory data
(:func:`~trainpipe.data.validation.checks.check_table`); an anomaly is reported once per split
and check/column, naming the first shard it was found in and how many shards have it. Statistics
are mergeable sketches (:mod:`.sketches`) turned into the report's usual ``DatasetStatistics``,
so the HTML/JSON report is the same as for in-memory data. Drift of each split against a
reference shard set, or against its stored summary (:func:`reference_summary`,
``ShardSummary.to_dict``/``from_dict``; merged summaries of several sets are the summary of
their union), uses the same PSI/JS metrics over the reference's quantile bins and the same
decision rule as in memory (:func:`~trainpipe.data.validation.drift.drift_result`): a distance
above its threshold is drift only when a chi-square test on those bins (or the category counts)
finds the samples different; otherwise it is inconclusive.

What is approximate or narrower than in memory, and why: quantiles, histograms and distinct
counts come from sketches; duplicates are counted within a row group (finding repeats across
shards needs every row hash in memory); leakage between splits is not checked because splits are
whole shards (a row in two shards is a duplicate, not found for the same reason); the KS
statistic needs raw samples and is not computed (chi-square over the bins is the test instead).
An inferred schema takes column types (and image shapes) from the first training row group, and
its missing-value limits and NaN/inf allowances from mergeable counts over a sample of training
row groups spread evenly across the shards (``SCHEMA_SAMPLE_ROW_GROUPS``, read one at a time), so
a column that is rarely missing is not held to a 0% limit because the first row group happened to
be complete; category lists are dropped (later shards may hold other categories) and the label
set is taken from all shards. Missing fractions are checked per shard, on the shard's summed
counts, so a small row group's sampling noise is not an anomaly.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainpipe.data.images import decode_one, is_image_column
from trainpipe.data.shards import ShardInfo, ShardSet
from trainpipe.data.validation.api import _drift_anomalies
from trainpipe.data.validation.checks import (
    Anomaly,
    check_table,
    make_anomaly,
    missing_fraction_anomaly,
)
from trainpipe.data.validation.drift import (
    QUANTILE_BINS,
    DriftResult,
    chi_square_p_value,
    drift_result,
    js_distance,
    psi,
)
from trainpipe.data.validation.hashing import column_hash, duplicate_count, row_hashes
from trainpipe.data.validation.report import ValidationReport, new_report
from trainpipe.data.validation.schema import (
    ArrayColumn,
    NumericColumn,
    Schema,
    dtype_family,
    infer_schema,
    missing_headroom,
)
from trainpipe.data.validation.sketches import ColumnSketch, counter_from_dict, counter_to_dict
from trainpipe.data.validation.stats import (
    QUANTILES,
    TOP_K,
    ColumnStatistics,
    DatasetStatistics,
    Histogram,
    LabelStatistics,
)

HISTOGRAM_BINS = 20
SUMMARY_FORMAT = "trainpipe.shard-summary"
SUMMARY_VERSION = 1
SCHEMA_SAMPLE_ROW_GROUPS = 16
"""Training row groups an inferred schema's missing limits and NaN/inf allowances come from,
spread evenly over the shards: bounded reading, one row group in memory at a time."""
SHARDS_AHEAD_PER_WORKER = 2
"""Shards submitted to the summarizing threads ahead of the in-order merge, per thread: enough
to keep every thread busy while the merge waits for the oldest one."""


@dataclass
class ShardSummary:
    """Mergeable summary of some rows: counts, sketches per column, labels, anomalies."""

    rows: int = 0
    duplicates: int = 0
    columns: dict[str, ColumnSketch] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    labels: Counter = field(default_factory=Counter)
    anomalies: dict[tuple, tuple[Anomaly, int]] = field(default_factory=dict)

    def merge(self, other: ShardSummary) -> ShardSummary:
        self.rows += other.rows
        self.duplicates += other.duplicates
        for name, sketch in other.columns.items():
            if name in self.columns:
                self.columns[name].merge(sketch)
            else:
                self.columns[name] = sketch
        self.types |= other.types
        self.kinds |= other.kinds
        self.labels.update(other.labels)
        for key, (anomaly, shards) in other.anomalies.items():
            first, count = self.anomalies.get(key, (anomaly, 0))
            self.anomalies[key] = (first, count + shards)
        return self

    def to_dict(self) -> dict:
        """JSON-safe and exact (:meth:`from_dict` gives a summary that merges and compares as
        this one). Anomalies are left out: they belong to the run that found them, while a
        stored summary serves as a drift reference and for statistics."""
        columns = {}
        for name, sketch in self.columns.items():
            try:
                columns[name] = sketch.to_dict()
            except ValueError as exc:
                raise ValueError(f"column {name!r}: {exc}") from None
        return {
            "format": SUMMARY_FORMAT,
            "version": SUMMARY_VERSION,
            "rows": int(self.rows),
            "duplicates": int(self.duplicates),
            "columns": columns,
            "types": self.types,
            "kinds": self.kinds,
            "labels": counter_to_dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ShardSummary:
        """The summary :meth:`to_dict` stored; ValueError naming what is wrong otherwise."""
        if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
            raise ValueError(f"not a {SUMMARY_FORMAT} record")
        if data.get("version") != SUMMARY_VERSION:
            raise ValueError(
                f"version {data.get('version')!r}, this release reads {SUMMARY_VERSION}"
            )
        try:
            columns = {n: ColumnSketch.from_dict(c) for n, c in data["columns"].items()}
            summary = cls(
                rows=int(data["rows"]),
                duplicates=int(data["duplicates"]),
                columns=columns,
                types={str(k): str(v) for k, v in data["types"].items()},
                kinds={str(k): str(v) for k, v in data["kinds"].items()},
                labels=counter_from_dict(data["labels"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed summary ({type(exc).__name__}: {exc})") from None
        if set(columns) != set(summary.kinds) or set(columns) != set(summary.types):
            raise ValueError("malformed summary (columns, kinds and types name different columns)")
        return summary


def _kind(schema: Schema, name: str, type_: pa.DataType) -> str:
    if any(c.name == name for c in schema.columns):
        return schema.column(name).kind
    family = dtype_family(type_)
    return {"array": "array", "int": "numeric", "float": "numeric"}.get(family, "categorical")


def summarize_table(table: pa.Table, schema: Schema, split: str, where: str) -> ShardSummary:
    """Summary of one table (a row group): checks, sketches, label counts."""
    out = ShardSummary(rows=table.num_rows)
    images = [f.name for f in table.schema if is_image_column(f.type)]
    for name in images:
        _summarize_images(table.column(name), name, schema, split, where, out)
    table = table.drop_columns(images)
    checked = schema
    if images:  # decoded above; the table checks see the other columns
        kept = [c for c in schema.columns if c.name not in images]
        checked = schema.model_copy(update={"columns": kept})
    for anomaly in check_table(table, checked, split=split):
        located = anomaly.model_copy(update={"message": f"{where}: {anomaly.message}"})
        out.anomalies[(anomaly.check, anomaly.column)] = (located, 1)
    out.duplicates = duplicate_count(row_hashes(table))
    label = schema.label.column if schema.label is not None else None
    for f in table.schema:
        column = table.column(f.name)
        kind = _kind(schema, f.name, f.type)
        sketch = ColumnSketch(categorical=kind == "categorical")
        sketch.count = len(column) - column.null_count
        sketch.missing = column.null_count
        present = column.drop_null()
        if len(present):
            sketch.distinct.update(column_hash(present))
        if kind == "array" and pa.types.is_fixed_size_list(f.type):
            sketch.update_numeric(pc.list_flatten(present).to_numpy(zero_copy_only=False))
        elif kind == "numeric":
            sketch.update_numeric(present.to_numpy())
        elif kind == "text":
            sketch.update_numeric(pc.utf8_length(present).to_numpy())
        elif kind == "categorical":
            sketch.categories.update(_value_counts(present))
        out.columns[f.name] = sketch
        out.types[f.name] = str(f.type)
        out.kinds[f.name] = kind
        if f.name == label:
            out.labels.update(_value_counts(present))
    return out


def _value_counts(values) -> dict:
    counts = pc.value_counts(values)
    names, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    return dict(zip(names, numbers, strict=True))


def _summarize_images(column, name: str, schema: Schema, split: str, where: str, out) -> None:
    """Decode every image: unreadable ones, and ones whose shape differs from the schema's, are
    anomalies naming the shard; pixels feed the column's sketch (pixel statistics)."""
    spec = next((c for c in schema.columns if c.name == name), None)
    shape = getattr(spec, "shape", None)
    sketch = ColumnSketch()
    sketch.count = len(column) - column.null_count
    sketch.missing = column.null_count
    problems: dict[str, list] = {"unreadable": [], "array_shape": []}
    for row, data in enumerate(column.to_pylist()):
        if data is None:
            continue
        try:
            pixels = decode_one(data, shape)
        except ValueError as exc:
            kind = "array_shape" if "like the others" in str(exc) else "unreadable"
            problems[kind].append((row, str(exc)))
            continue
        sketch.update_numeric(pixels)
    for check, rows in problems.items():
        if rows:
            anomaly = make_anomaly(
                schema,
                check,
                f"{where}: {len(rows)} image(s) rejected, first at row {rows[0][0]}: {rows[0][1]}",
                split=split,
                column=name,
                severity="blocking",
            )
            out.anomalies[(check, name)] = (anomaly, 1)
    out.columns[name] = sketch
    out.types[name] = str(column.type)
    out.kinds[name] = "image"


def summarize_shard(shards: ShardSet, shard: ShardInfo, schema: Schema, split: str) -> ShardSummary:
    """Row groups summarized one by one (missing limits lifted) and merged; then each column's
    missing fraction over the whole shard against its limit."""
    lifted = schema.model_copy(
        update={
            "columns": [c.model_copy(update={"max_missing_fraction": 1.0}) for c in schema.columns]
        }
    )
    summary = ShardSummary()
    for table in shards.iter_batches(shard):
        summary.merge(summarize_table(table, lifted, split, f"shard {shard.name}"))
    for spec in schema.columns:
        sketch = summary.columns.get(spec.name)
        if (
            sketch is None
            or summary.kinds.get(spec.name) == "image"
            or ("wrong_type", spec.name) in summary.anomalies
        ):
            continue
        found = missing_fraction_anomaly(
            schema, spec, split, sketch.missing, sketch.missing + sketch.count
        )
        if found is not None:
            located = found.model_copy(update={"message": f"shard {shard.name}: {found.message}"})
            summary.anomalies[(found.check, found.column)] = (located, 1)
    return summary


def summarize_split(
    shards: ShardSet, members: list[ShardInfo], schema: Schema, split: str, workers: int
) -> ShardSummary:
    """Shards summarized in parallel threads (Arrow decodes without the GIL), merged in order.
    At most ``SHARDS_AHEAD_PER_WORKER * workers`` shards are submitted ahead of the merge
    (``Executor.map`` would submit every shard at once): neither the queued tasks nor the
    summaries waiting to be merged grow with the number of shards."""
    workers = max(1, workers)
    total = ShardSummary()
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for shard in members:
                pending.append(pool.submit(summarize_shard, shards, shard, schema, split))
                if len(pending) >= SHARDS_AHEAD_PER_WORKER * workers:
                    total.merge(pending.popleft().result())
            while pending:
                total.merge(pending.popleft().result())
        finally:  # after an error, the shards not started yet are not read
            for future in pending:
                future.cancel()
    return total


def to_statistics(summary: ShardSummary, schema: Schema) -> DatasetStatistics:
    columns = {}
    for name, sketch in summary.columns.items():
        base = {
            "name": name,
            "kind": summary.kinds[name],
            "type": summary.types[name],
            "count": sketch.count,
            "missing": sketch.missing,
            "distinct": sketch.distinct.estimate(),
        }
        if sketch.finite:
            edges, counts = sketch.histogram(HISTOGRAM_BINS)
            quantiles = sketch.quantile.quantiles(list(QUANTILES))
            base |= {
                "nan": sketch.nan,
                "inf": sketch.inf,
                "min": sketch.min,
                "max": sketch.max,
                "mean": sketch.mean,
                "std": sketch.std,
                "quantiles": {
                    f"p{round(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)
                },
                "histogram": Histogram(edges=edges, counts=counts),
            }
        if sketch.categories:
            base["top_k"] = [(k, int(v)) for k, v in sketch.categories.most_common(TOP_K)]
        columns[name] = ColumnStatistics(**base)
    label = None
    if schema.label is not None and summary.labels:
        counts = list(summary.labels.values())
        label = LabelStatistics(
            column=schema.label.column,
            distribution={str(k): int(v) for k, v in sorted(summary.labels.items(), key=str)},
            imbalance_ratio=max(counts) / min(counts),
        )
    return DatasetStatistics(
        num_rows=summary.rows,
        num_columns=len(summary.columns),
        columns=columns,
        duplicate_rows=summary.duplicates,
        label=label,
    )


def _drift(reference: ShardSummary, current: ShardSummary, schema: Schema, split: str):
    results = []
    for name, ref in reference.columns.items():
        cur = current.columns.get(name)
        kind = reference.kinds[name]
        if cur is None or kind == "other":
            continue
        if ref.categories:
            keys = sorted(set(ref.categories) | set(cur.categories or {}), key=str)
            ref_counts = np.array([ref.categories.get(k, 0) for k in keys], dtype=float)
            cur_counts = np.array([(cur.categories or {}).get(k, 0) for k in keys], dtype=float)
        elif ref.finite and cur.finite:
            edges = np.unique(ref.quantile.quantiles(list(np.linspace(0, 1, QUANTILE_BINS + 1))))
            ref_counts = ref.quantile.bin_counts(edges[1:-1])
            cur_counts = cur.quantile.bin_counts(edges[1:-1])
        else:
            continue
        # The significance test of the shared rule: chi-square on the category counts, and on
        # the counts in the reference's quantile bins for numbers (KS needs raw samples).
        result = drift_result(
            split,
            name,
            kind,
            {"psi": psi(ref_counts, cur_counts), "js": js_distance(ref_counts, cur_counts)},
            schema.thresholds(name),
            chi_square_p_value(ref_counts, cur_counts),
            int(ref_counts.sum()),
            int(cur_counts.sum()),
            {"test": "chi-square", "bins": len(ref_counts)},
        )
        if result is not None:
            results.append(result)
    return results


def _label_anomalies(summary: ShardSummary, schema: Schema, split: str) -> list[Anomaly]:
    """Label checks over the whole split (per row group they would be meaningless)."""
    if schema.label is None or not summary.labels:
        return []
    out = []
    known = schema.label.values
    if known is not None:
        unknown = {k: v for k, v in summary.labels.items() if k not in set(known)}
        if unknown:
            out.append(
                make_anomaly(
                    schema,
                    "unknown_label",
                    f"{sum(unknown.values())} rows have labels {sorted(unknown, key=str)[:5]} "
                    f"outside the schema's {known}",
                    split=split,
                    column=schema.label.column,
                )
            )
    limit = schema.label.max_imbalance_ratio
    counts = [summary.labels.get(k, 0) for k in known] if known else list(summary.labels.values())
    ratio = max(counts) / min(counts) if min(counts) else math.inf
    if limit is not None and ratio > limit:
        out.append(
            make_anomaly(
                schema,
                "class_imbalance",
                f"class imbalance {ratio:.3g} (largest/smallest class) exceeds {limit}",
                split=split,
                column=schema.label.column,
            )
        )
    return out


def _first_shape(values: list) -> list[int] | None:
    for data in values:
        try:
            return list(decode_one(data, None).shape) if data is not None else None
        except ValueError:
            continue
    return None


@dataclass
class MissingCounts:
    """Mergeable per-column counts of missing, NaN and infinite values over sampled rows."""

    rows: int = 0
    missing: Counter = field(default_factory=Counter)
    nan: Counter = field(default_factory=Counter)
    inf: Counter = field(default_factory=Counter)

    def add(self, table: pa.Table) -> MissingCounts:
        self.rows += table.num_rows
        for f in table.schema:
            column = table.column(f.name)
            self.missing[f.name] += column.null_count
            if dtype_family(f.type) == "float" and len(column):
                self.nan[f.name] += pc.sum(pc.is_nan(column)).as_py() or 0
                self.inf[f.name] += pc.sum(pc.is_inf(column)).as_py() or 0
        return self

    def applied(self, schema: Schema) -> Schema:
        """``schema`` with the missing limits (the in-memory headroom on the pooled fraction)
        and NaN/inf allowances these counts call for."""
        columns = []
        for c in schema.columns:
            update: dict = {}
            if c.name in self.missing and self.rows:
                update["max_missing_fraction"] = missing_headroom(self.missing[c.name] / self.rows)
            if isinstance(c, NumericColumn) and c.dtype == "float":
                update["allow_nan"] = c.allow_nan or self.nan[c.name] > 0
                update["allow_inf"] = c.allow_inf or self.inf[c.name] > 0
            columns.append(c.model_copy(update=update))
        return schema.model_copy(update={"columns": columns})


def sampled_row_groups(members: list[ShardInfo], count: int) -> list[tuple[ShardInfo, int]]:
    """``count`` (shard, row group) pairs evenly spaced over ``members``' row groups in order,
    the first row group first."""
    sizes = np.array([len(s.row_group_rows) for s in members])
    total = int(sizes.sum())
    if not total:
        return []
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).astype(np.int64))
    owners = np.searchsorted(starts, picks, side="right") - 1
    return [(members[o], int(p - starts[o])) for o, p in zip(owners, picks, strict=True)]


def streaming_schema(
    shards: ShardSet,
    members: list[ShardInfo],
    label_column: str | None,
    sample_row_groups: int = SCHEMA_SAMPLE_ROW_GROUPS,
) -> Schema:
    """Types from the first row group of ``members``, missing limits and NaN/inf from a sample
    of their row groups (:class:`MissingCounts`), without category lists (later shards may
    hold others)."""
    sample = sampled_row_groups(members, sample_row_groups)
    table = shards.read_row_group(*sample[0])
    images = [f.name for f in table.schema if is_image_column(f.type)]
    schema = infer_schema(table.drop_columns(images), label_column=label_column)
    for name in images:  # the first readable image fixes the shape every image must have
        shape = _first_shape(table.column(name).to_pylist())
        if shape is not None:
            column = ArrayColumn(name=name, dtype="float", shape=shape)
            schema = schema.model_copy(update={"columns": [*schema.columns, column]})
    table = table.drop_columns(images)
    counts, names = MissingCounts().add(table), table.column_names
    del table
    for shard, group in sample[1:]:
        counts.add(shards.read_row_group(shard, group, columns=names))
    schema = counts.applied(schema)
    columns = [
        c.model_copy(update={"values": None}) if c.kind == "categorical" else c
        for c in schema.columns
    ]
    label = None
    if schema.label is not None:
        # Every shard's labels are known only after the pass: validate_shards fills them in.
        label = schema.label.model_copy(update={"values": None, "max_imbalance_ratio": None})
    return schema.model_copy(update={"columns": columns, "label": label})


def row_group_schema(schema: Schema) -> Schema:
    """The schema each row group is summarized with: label checks need the whole split, so
    the label's values and imbalance limit are lifted (``_label_anomalies`` applies them)."""
    if schema.label is None:
        return schema
    label = schema.label.model_copy(update={"values": None, "max_imbalance_ratio": None})
    return schema.model_copy(update={"label": label})


def reference_summary(reference: ShardSet, schema: Schema, workers: int = 2) -> ShardSummary:
    """Every shard of ``reference`` summarized as :func:`validate_shards` summarizes a split:
    the drift reference it compares against, to store and merge (anomalies left out)."""
    summary = summarize_split(
        reference, reference.shards, row_group_schema(schema), "reference", workers
    )
    summary.anomalies.clear()
    return summary


def validate_shards(
    shards: ShardSet,
    splits: dict[str, list[ShardInfo]],
    schema: Schema | None = None,
    *,
    label_column: str | None = None,
    reference: ShardSet | ShardSummary | None = None,
    workers: int = 2,
) -> tuple[ValidationReport, dict[str, ShardSummary]]:
    """The report (as :func:`validate_dataset` makes it) and each split's merged summary.
    ``reference``: shards to read, or their stored summary (:func:`reference_summary`, merged
    and stored as the caller likes): the drift against either is the same."""
    source = "given"
    if schema is None:
        members = splits.get("train") or next(iter(splits.values()))
        schema = streaming_schema(shards, members, label_column)
        source = "data"
    per_row_group = row_group_schema(schema)
    summaries = {
        name: summarize_split(shards, members, per_row_group, name, workers)
        for name, members in splits.items()
    }
    if source == "data" and schema.label is not None:
        seen = {v for summary in summaries.values() for v in summary.labels}
        label = schema.label.model_copy(update={"values": sorted(seen, key=str)})
        schema = schema.model_copy(update={"label": label})
    anomalies: list[Anomaly] = []
    for name, summary in summaries.items():
        for anomaly, count in summary.anomalies.values():
            more = f" (and {count - 1} more shard(s))" if count > 1 else ""
            anomalies.append(anomaly.model_copy(update={"message": anomaly.message + more}))
        anomalies.extend(_label_anomalies(summary, schema, name))
    drift: list[DriftResult] = []
    reference_stats = None
    if reference is not None:
        ref_summary = (
            reference
            if isinstance(reference, ShardSummary)
            else reference_summary(reference, schema, workers)
        )
        reference_stats = to_statistics(ref_summary, schema)
        for name, summary in summaries.items():
            drift.extend(_drift(ref_summary, summary, schema, name))
        anomalies.extend(_drift_anomalies(drift, schema))
    evaluated = {"missing_column", "wrong_type", "missing_fraction", "nan", "inf", "duplicates"}
    if reference is not None:
        evaluated.add("drift")
    report = new_report(
        schema_source=source,
        data_schema=schema,
        splits={name: to_statistics(s, schema) for name, s in summaries.items()},
        reference=reference_stats,
        anomalies=anomalies,
        drift=drift,
        evaluated=sorted(evaluated),
    )
    return report, summaries
