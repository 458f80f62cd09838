"""Per-column statistics of an Arrow table, vectorized with pyarrow.compute and numpy.

stats = compute_statistics(table, schema=schema)      # or label_column="label" without one
stats.columns["age"].quantiles["p50"], stats.duplicate_rows, stats.label.imbalance_ratio
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from trainpipe.data.validation.hashing import duplicate_count, row_hashes
from trainpipe.data.validation.io import array_shape
from trainpipe.data.validation.schema import (
    MAX_INFERRED_CATEGORIES,
    Schema,
    dtype_family,
)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
TOP_K = 10
# Mean example per array position is kept for pictures only when it is this small.
MAX_MEAN_EXAMPLE_SIZE = 4096


class _Stats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Histogram(_Stats):
    edges: list[float]
    counts: list[int]


class LengthStats(_Stats):
    min: int
    max: int
    mean: float


class ColumnStatistics(_Stats):
    name: str
    kind: str
    """numeric, categorical, text, array or other."""
    type: str
    """The Arrow type."""
    count: int
    """Rows with a value (not null)."""
    missing: int
    """Null rows."""
    nan: int = 0
    inf: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] | None = None
    histogram: Histogram | None = None
    """Equal-width histogram of the values (array elements; text lengths for text columns)."""
    distinct: int | None = None
    top_k: list[tuple[Any, int]] | None = None
    length: LengthStats | None = None
    shape: list[int] | None = None
    mean_example: list[float] | None = None
    """Per-position mean of an array column (a 'mean image'), when small enough to draw."""


class LabelStatistics(_Stats):
    column: str
    distribution: dict[str, int]
    imbalance_ratio: float | None
    """Most frequent class count / least frequent; None when a known class is absent."""


class DatasetStatistics(_Stats):
    num_rows: int
    num_columns: int
    columns: dict[str, ColumnStatistics]
    duplicate_rows: int
    label: LabelStatistics | None = None


def column_kind(field: pa.Field, column: pa.ChunkedArray, schema: Schema | None) -> str:
    if schema is not None and any(c.name == field.name for c in schema.columns):
        return schema.column(field.name).kind
    family = dtype_family(field.type)
    if family == "array":
        return "array"
    if family in ("int", "float"):
        return "numeric"
    if family == "bool":
        return "categorical"
    if family == "string":
        distinct = pc.count_distinct(column).as_py()
        small = distinct <= MAX_INFERRED_CATEGORIES and distinct <= max(1, len(column) // 2)
        return "categorical" if small else "text"
    return "other"


def compute_statistics(
    table: pa.Table,
    *,
    schema: Schema | None = None,
    label_column: str | None = None,
    hashes: np.ndarray | None = None,
) -> DatasetStatistics:
    """Statistics of every column, duplicate rows and the label distribution.

    ``hashes`` are row hashes over all columns when the caller already has them.
    """
    columns = {}
    for field in table.schema:
        column = table.column(field.name)
        kind = column_kind(field, column, schema)
        columns[field.name] = column_statistics(field, column, kind)
    if hashes is None:
        hashes = row_hashes(table)
    label_name = schema.label.column if schema is not None and schema.label else label_column
    label = None
    if label_name is not None and label_name in table.column_names:
        known = schema.label.values if schema is not None and schema.label else None
        label = label_statistics(table.column(label_name), label_name, known)
    return DatasetStatistics(
        num_rows=table.num_rows,
        num_columns=table.num_columns,
        columns=columns,
        duplicate_rows=duplicate_count(hashes),
        label=label,
    )


def column_statistics(field: pa.Field, column: pa.ChunkedArray, kind: str) -> ColumnStatistics:
    base: dict[str, Any] = {
        "name": field.name,
        "kind": kind,
        "type": str(field.type),
        "count": len(column) - column.null_count,
        "missing": column.null_count,
    }
    family = dtype_family(field.type)
    if kind == "array" and family == "array":
        values = pc.list_flatten(column)
        base |= _numeric(values) | {"shape": array_shape(field)}
        size = field.type.list_size
        if 0 < size <= MAX_MEAN_EXAMPLE_SIZE and base["count"]:
            matrix = _array_matrix(column)
            base["mean_example"] = [float(v) for v in np.nanmean(matrix, axis=0)]
    elif family in ("int", "float") and kind == "numeric":
        base |= _numeric(column)
    elif family in ("int", "float", "bool", "string"):
        base |= _categorical(column)
        if family == "string":
            base["length"] = _lengths(column)
            if kind == "text":
                base["histogram"] = _numeric(pc.utf8_length(column)).get("histogram")
    return ColumnStatistics(**base)


def _array_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """Non-null rows of a fixed_size_list column as an (n, size) float64 matrix."""
    array = column.combine_chunks()
    if array.null_count:
        array = array.drop_null()
    size = array.type.list_size
    return (
        pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, size)
    )


def finite_values(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Non-null, finite values as float64 numpy."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        values = values.drop_null()
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_floating(values.type):
        out = out[np.isfinite(out)]
    return out


def _numeric(values: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pa.types.is_floating(values.type):
        out["nan"] = int(pc.sum(pc.is_nan(values)).as_py() or 0)
        out["inf"] = int(pc.sum(pc.is_inf(values)).as_py() or 0)
    finite = finite_values(values)
    if len(finite) == 0:
        return out
    lo, hi = float(finite.min()), float(finite.max())
    quantiles = pc.tdigest(pa.array(finite), q=list(QUANTILES)).to_pylist()
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi) if hi > lo else None)
    return out | {
        "min": lo,
        "max": hi,
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "quantiles": {
            f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)
        },
        "histogram": Histogram(edges=edges.tolist(), counts=counts.tolist()),
    }


def _categorical(column: pa.ChunkedArray) -> dict[str, Any]:
    counts = pc.value_counts(column.drop_null())
    values = counts.field("values").to_pylist()
    freq = counts.field("counts").to_numpy()
    order = np.argsort(-freq, kind="stable")[:TOP_K]
    return {"distinct": len(values), "top_k": [(values[i], int(freq[i])) for i in order]}


def _lengths(column: pa.ChunkedArray) -> LengthStats | None:
    lengths = pc.utf8_length(column.drop_null())
    if len(lengths) == 0:
        return None
    lo, hi = (v.as_py() for v in pc.min_max(lengths).values())
    return LengthStats(min=lo, max=hi, mean=float(pc.mean(lengths).as_py()))


def label_statistics(
    column: pa.ChunkedArray, name: str, known: list[Any] | None = None
) -> LabelStatistics:
    counts = pc.value_counts(column.drop_null())
    distribution = dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )
    for value in known or []:
        distribution.setdefault(value, 0)
    relevant = [distribution[v] for v in known] if known else list(distribution.values())
    ratio = None
    if relevant and min(relevant) > 0:
        ratio = max(relevant) / min(relevant)
    elif relevant:
        ratio = math.inf
    return LabelStatistics(
        column=name,
        distribution={
            str(k): v for k, v in sorted(distribution.items(), key=lambda kv: str(kv[0]))
        },
        imbalance_ratio=None if ratio is None or math.isinf(ratio) else ratio,
    )
