"""Reading datasets into Arrow tables: Parquet, CSV, JSONL and NumPy .npz (arrays ``x`` and
``y``, as the pipeline reads them) from ``file://``, plain paths and ``s3://`` (all bytes
through :mod:`trainpipe.storage`), plus the built-in digits.

    table = read_table("s3://bucket/data/train.parquet")
    table = read_table("file:///data/train.csv")
    table = read_table("digits")                       # sklearn's 8x8 digits, 1797 rows

Fixed-shape numeric arrays (images) are ``fixed_size_list`` columns; their shape is recorded in
the field metadata under ``trainpipe.shape`` (``[1, 8, 8]`` for digits). JSONL arrays arrive as
(nested) lists and are turned into ``fixed_size_list`` columns when every row has the same shape.

A file that cannot be read (missing, truncated, not the format its name says) raises
:class:`DataReadError` with one line naming the file and the problem; the validator turns that
into an ``unreadable`` anomaly.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from trainpipe.storage import ArtifactNotFound, StorageError, open_store, split_uri

SHAPE_METADATA_KEY = b"trainpipe.shape"
BUILTIN_DIGITS = "digits"
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".npz": "npz",
}
FORMAT_NAMES = ("parquet", "csv", "jsonl", "npz")


class DataReadError(Exception):
    """A dataset could not be read; the message names the file, the problem and the fix."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty):
    reader libraries put whole tracebacks and hex dumps into their messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(uri: str, *, format: str | None = None, endpoint_url: str | None = None) -> pa.Table:
    """Read one dataset: a file, a folder of files of one format, or ``digits``.

    ``format`` ("parquet", "csv", "jsonl") overrides the guess from the file name;
    ``endpoint_url`` is the S3 endpoint (from config) for ``s3://`` URIs.
    """
    if uri in (BUILTIN_DIGITS, f"builtin:{BUILTIN_DIGITS}"):
        return load_digits_table()
    base, name = split_uri(uri)
    try:
        store = open_store(base, endpoint_url=endpoint_url)
        try:
            return _read_bytes(uri, store.get_bytes(name), format)
        except ArtifactNotFound:
            folder = store.reopen(uri)
            keys = [k for k in folder.list() if _format_of(k, format, strict=False)]
            if not keys:
                raise
            tables = [_read_bytes(folder.uri_for(k), folder.get_bytes(k), format) for k in keys]
            return concat_shards(tables, f"{uri}: the files in this folder")
    except StorageError as exc:
        raise DataReadError(f"{uri} is unreadable: {exc}") from exc


def concat_shards(tables: list[pa.Table], what: str) -> pa.Table:
    """One table from the tables of several files (columns missing in some become nulls);
    ``what`` names the files in the error when their columns clash."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataReadError(
            f"{what} have incompatible columns ({exc}); give one file or make their schemas agree"
        ) from exc


def _format_of(name: str, explicit: str | None, *, strict: bool = True) -> str | None:
    if explicit is not None:
        if explicit not in FORMAT_NAMES:
            raise DataReadError(f"unknown format {explicit!r}; use {', '.join(FORMAT_NAMES)}")
        return explicit
    stem = name[:-3] if name.endswith(".gz") else name
    fmt = _FORMATS.get(posixpath.splitext(stem)[1].lower())
    if fmt is None and strict:
        raise DataReadError(
            f"{name}: cannot tell the format from the file name; name it .parquet, .csv, "
            ".jsonl or .npz (or pass format=)"
        )
    return fmt


def _read_bytes(uri: str, data: bytes, format: str | None) -> pa.Table:
    fmt = _format_of(uri, format)
    if not data:
        raise DataReadError(f"{uri} is unreadable: the file is empty (0 bytes); rewrite it")
    if fmt == "npz":
        return npz_table(data, uri)
    source = pa.BufferReader(data)
    if uri.endswith(".gz"):
        source = pa.CompressedInputStream(source, "gzip")
    try:
        if fmt == "parquet":
            # ParquetFile reads files with repeated column names (read_table refuses them
            # with a puzzling message); they are reported below.
            table = pq.ParquetFile(source).read()
        elif fmt == "csv":
            table = pa_csv.read_csv(source)
        else:
            table = pa_json.read_json(source)
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = first_line(exc)
        raise DataReadError(
            f"{uri} is unreadable as {fmt} ({len(data)} bytes): {detail}; the file is "
            "truncated or not in that format, rewrite it from its source"
        ) from exc
    names = table.column_names
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataReadError(
            f"{uri} has duplicate column names {duplicated}; rename them so every column "
            "name is unique"
        )
    return normalize_arrays(table)


def npz_table(data: bytes, name: str) -> pa.Table:
    """An .npz with arrays ``x`` (examples, any fixed shape) and ``y`` (labels) as a table:
    ``x`` a fixed_size_list column with its shape recorded, ``y`` a scalar column."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DataReadError(
                    f"{name} must contain arrays 'x' and 'y' (found {', '.join(arrays.files)}); "
                    "save it with np.savez(path, x=examples, y=labels)"
                )
            x, y = np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"])
    except (ValueError, OSError) as exc:
        raise DataReadError(f"{name} is unreadable as npz: {exc}") from None
    if x.ndim < 2 or y.ndim != 1:
        raise DataReadError(
            f"{name} has x of shape {list(x.shape)} and y of shape {list(y.shape)}; "
            "x needs one row per example (2-D or more) and y one label per example (1-D)"
        )
    if len(x) != len(y):
        raise DataReadError(
            f"{name} has {len(x)} rows in x but {len(y)} labels in y; "
            "they must have the same length"
        )
    field_, array = array_field("x", x, list(x.shape[1:]))
    schema = pa.schema([field_, ("y", pa.from_numpy_dtype(y.dtype))])
    return pa.Table.from_arrays([array, pa.array(y)], schema=schema)


def normalize_arrays(table: pa.Table) -> pa.Table:
    """Turn uniform (nested) numeric list columns into ``fixed_size_list`` with a recorded shape."""
    for i, field in enumerate(table.schema):
        if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)):
            continue
        column = table.column(i)
        flat, shape = _flatten_uniform(column)
        if flat is None:
            continue
        if field.metadata and SHAPE_METADATA_KEY in field.metadata:
            shape = json.loads(field.metadata[SHAPE_METADATA_KEY])
        new_field = pa.field(field.name, flat.type, field.nullable).with_metadata(
            {**(field.metadata or {}), SHAPE_METADATA_KEY: json.dumps(shape).encode()}
        )
        table = table.set_column(i, new_field, flat)
    return table


def _flatten_uniform(column: pa.ChunkedArray) -> tuple[pa.Array | None, list[int]]:
    """A fixed_size_list view of a list-of-lists column when all rows share one shape."""
    array = column.combine_chunks()
    shape: list[int] = []
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = pc.list_value_length(array).drop_null()
        if len(lengths) == 0:
            return None, []
        lo, hi = pc.min_max(lengths).values()
        if lo.as_py() != hi.as_py():
            return None, []
        shape.append(lo.as_py())
        if len(shape) == 1:
            outer_valid = array.is_valid()
        array = pc.list_flatten(array)
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        return None, []
    size = int(np.prod(shape))
    if size == 0 or array.null_count:
        return None, []
    flat = pa.FixedSizeListArray.from_arrays(array, size)
    if not pc.all(outer_valid).as_py():
        # Null rows contributed no values above, so they are re-inserted as null slots.
        flat = _reinsert_nulls(flat, outer_valid)
    return flat, shape


def _reinsert_nulls(flat: pa.FixedSizeListArray, valid: pa.BooleanArray) -> pa.Array:
    mask = valid.to_numpy(zero_copy_only=False)
    positions = np.cumsum(mask) - 1
    taken = flat.take(pa.array(np.where(mask, positions, 0)))
    return pc.if_else(valid, taken, pa.nulls(len(valid), flat.type))


def array_shape(field: pa.Field) -> list[int] | None:
    """The recorded shape of an array column, or its flat length when none was recorded."""
    if field.metadata and SHAPE_METADATA_KEY in field.metadata:
        return list(json.loads(field.metadata[SHAPE_METADATA_KEY]))
    if pa.types.is_fixed_size_list(field.type):
        return [field.type.list_size]
    return None


def array_field(name: str, values: np.ndarray, shape: Sequence[int]) -> tuple[pa.Field, pa.Array]:
    """A ``fixed_size_list`` column from an (n, *shape) numpy array, shape in the metadata."""
    n = values.shape[0]
    flat = pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(n, -1).ravel()), int(np.prod(shape))
    )
    field = pa.field(name, flat.type).with_metadata({SHAPE_METADATA_KEY: json.dumps(list(shape))})
    return field, flat


def load_digits_table() -> pa.Table:
    """sklearn's digits: ``pixels`` fixed_size_list<float32>[64], shape [1, 8, 8]; ``label``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    field, pixels = array_field("pixels", digits.images.astype(np.float32), [1, 8, 8])
    labels = pa.array(digits.target.astype(np.int64))
    return pa.Table.from_arrays(
        [pixels, labels], schema=pa.schema([field, pa.field("label", pa.int64())])
    )


def write_table(table: pa.Table, uri: str, *, endpoint_url: str | None = None) -> None:
    """Write ``table`` as Parquet, CSV or JSONL (by its extension) through storage."""
    base, name = split_uri(uri)
    fmt = _format_of(name, None)
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink)
    elif fmt == "csv":
        pa_csv.write_csv(table, sink)
    else:
        for row in table.to_pylist():
            sink.write(json.dumps(row).encode() + b"\n")
    open_store(base, endpoint_url=endpoint_url).put_bytes(name, sink.getvalue())
