"""The entry point the pipeline calls: validate splits against a schema and a reference.

report = validate_dataset(
    {"train": train, "validation": val, "test": "s3://b/data/test.parquet"},
    schema=load_schema("schema.yaml"),           # or None: inferred from the reference
    reference=last_accepted,                     # or None: no drift checks
    label_column="label",
)
if report.blocking:
    raise SystemExit(report.blocking[0].message)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from trainpipe.data.validation.checks import Anomaly, check_table, fmt, make_anomaly, pct
from trainpipe.data.validation.drift import DriftResult, embedding_drift, table_drift
from trainpipe.data.validation.hashing import duplicate_count, row_hashes, shared_count
from trainpipe.data.validation.io import DataReadError, read_table
from trainpipe.data.validation.report import ValidationReport, new_report
from trainpipe.data.validation.schema import Schema, infer_schema
from trainpipe.data.validation.stats import compute_statistics


def validate_dataset(
    splits: Mapping[str, pa.Table | str] | pa.Table | str,
    schema: Schema | None = None,
    reference: pa.Table | str | None = None,
    *,
    label_column: str | None = None,
    reference_embeddings: np.ndarray | None = None,
    endpoint_url: str | None = None,
    embeddings: Mapping[str, np.ndarray] | None = None,
) -> ValidationReport:
    """Check every split; returns a report whose ``blocking`` anomalies reject the data.

    ``splits`` maps split names (train, validation, test, ...) to tables or URIs; a URI that
    cannot be read becomes an ``unreadable`` anomaly. Without ``schema`` one is inferred from
    ``reference``, or else from the first readable split (then only data-quality problems and
    differences between splits can show). ``reference`` (table or URI; unreadable raises
    DataReadError) enables drift checks. ``embeddings`` per split plus ``reference_embeddings``
    (encoder outputs, (n, d) arrays) enable embedding drift. ``endpoint_url`` is the S3
    endpoint (from config) for ``s3://`` URIs.
    """
    if isinstance(splits, pa.Table | str):
        splits = {"data": splits}
    if isinstance(reference, str):
        reference = read_table(reference, endpoint_url=endpoint_url)
    anomalies: list[Anomaly] = []
    evaluated: set[str] = {"unreadable"}
    tables: dict[str, pa.Table | None] = {}
    for name, source in splits.items():
        try:
            tables[name] = (
                read_table(source, endpoint_url=endpoint_url) if isinstance(source, str) else source
            )
        except DataReadError as exc:
            tables[name] = None
            anomalies.append(make_anomaly(schema, "unreadable", str(exc), split=name))
    readable = {name: t for name, t in tables.items() if t is not None}

    source_kind = "given"
    if schema is None:
        base = reference if reference is not None else next(iter(readable.values()), None)
        source_kind = "reference" if reference is not None else "data"
        if base is None:
            source_kind = "none"
        else:
            schema = infer_schema(base, label_column=label_column)

    stats = {}
    hashes: dict[str, np.ndarray] = {}
    if schema is not None:
        evaluated |= _schema_checks(schema)
        for name, table in readable.items():
            anomalies.extend(check_table(table, schema, split=name))
            hashes[name] = row_hashes(table)
            anomalies.extend(_duplicates(table, hashes[name], schema, name))
        if schema.check_leakage and len(readable) > 1:
            evaluated.add("leakage")
            anomalies.extend(_leakage(readable, schema))
        for name, table in readable.items():
            stats[name] = compute_statistics(table, schema=schema, hashes=hashes[name])

    drift: list[DriftResult] = []
    reference_stats = None
    if reference is not None and schema is not None:
        evaluated.add("drift")
        reference_stats = compute_statistics(reference, schema=schema)
        for name, table in readable.items():
            drift.extend(table_drift(reference, table, schema, split=name))
    if reference_embeddings is not None and embeddings:
        evaluated.add("drift")
        limit = schema.drift_defaults.embedding_auc if schema is not None else 0.75
        for name, current in embeddings.items():
            result = embedding_drift(reference_embeddings, current, threshold_auc=limit, split=name)
            drift.append(result)
    anomalies.extend(_drift_anomalies(drift, schema))

    return new_report(
        schema_source=source_kind,
        data_schema=schema,
        splits={name: stats.get(name) for name in tables},
        reference=reference_stats,
        anomalies=anomalies,
        drift=drift,
        evaluated=sorted(evaluated),
    )


def _schema_checks(schema: Schema) -> set[str]:
    checks = {"empty_dataset", "missing_column", "wrong_type", "missing_fraction", "duplicates"}
    if not schema.allow_extra_columns:
        checks.add("extra_column")
    for spec in schema.columns:
        if spec.kind in ("numeric", "array"):
            checks |= {"nan", "inf"}
            if spec.min is not None or spec.max is not None:
                checks.add("out_of_range")
        if spec.kind == "array":
            checks.add("array_shape")
        if spec.kind == "categorical" and spec.values is not None:
            checks.add("unseen_category")
        if spec.kind == "text" and (spec.min_length is not None or spec.max_length is not None):
            checks.add("text_length")
    if schema.label is not None:
        if schema.label.values is not None:
            checks.add("unknown_label")
        if schema.label.max_imbalance_ratio is not None:
            checks.add("class_imbalance")
    return checks


def _duplicates(table: pa.Table, hashes: np.ndarray, schema: Schema, split: str) -> list[Anomaly]:
    n = table.num_rows
    dupes = duplicate_count(hashes)
    if not n or dupes / n <= schema.max_duplicate_fraction:
        return []
    return [
        make_anomaly(
            schema,
            "duplicates",
            f"{fmt(dupes)} of {fmt(n)} rows ({pct(dupes, n)}) repeat an earlier row, above the "
            f"limit {schema.max_duplicate_fraction:.2%}",
            split=split,
            count=dupes,
            rows=n,
            fraction=dupes / n,
            limit=schema.max_duplicate_fraction,
        )
    ]


def _leakage(tables: dict[str, pa.Table], schema: Schema) -> list[Anomaly]:
    """Examples (all non-label columns equal) of a later split that also occur in an earlier one."""
    label = schema.label.column if schema.label is not None else None
    names = list(tables)
    out = []
    cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def features(name: str, columns: tuple[str, ...]) -> np.ndarray:
        if (name, columns) not in cache:
            cache[(name, columns)] = row_hashes(tables[name], columns)
        return cache[(name, columns)]

    for j, later in enumerate(names):
        for earlier in names[:j]:
            columns = tuple(
                c
                for c in tables[later].column_names
                if c != label and c in tables[earlier].column_names
            )
            if not columns or not tables[later].num_rows:
                continue
            shared = shared_count(features(later, columns), features(earlier, columns))
            if shared:
                n = tables[later].num_rows
                out.append(
                    make_anomaly(
                        schema,
                        "leakage",
                        f"{fmt(shared)} of {fmt(n)} {later} examples ({pct(shared, n)}) also "
                        f"appear in {earlier} (identical {len(columns)} feature columns)",
                        split=later,
                        count=shared,
                        rows=n,
                        other_split=earlier,
                    )
                )
    return out


def _drift_anomalies(results: list[DriftResult], schema: Schema | None) -> list[Anomaly]:
    out = []
    for r in results:
        if not r.drifted:
            continue
        parts = [f"{k} {r.metrics[k]:.3g} > {r.thresholds[k]:.3g}" for k in r.exceeded]
        out.append(
            make_anomaly(
                schema,
                "drift",
                f"{r.kind} distribution moved from the reference: {', '.join(parts)} "
                f"(n {fmt(r.n_reference)} reference, {fmt(r.n_current)} current)",
                split=r.split,
                column=r.column,
                metrics=r.metrics,
                thresholds=r.thresholds,
            )
        )
    return out
