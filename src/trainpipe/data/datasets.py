"""From raw tables to the arrays every stage trains on.

Sources are read as Arrow tables by :mod:`trainpipe.data.validation.io` (Parquet, CSV, JSONL,
the built-in digits) or from an .npz with ``x`` and ``y`` arrays; a source is one file the
pipeline splits, or a folder holding ``train.*``, ``validation.*`` and ``test.*``.

A dataset is then examples ``x`` (float32, ``[n, *feature_shape]``) and integer labels ``y``
with their names. Feature columns are numeric scalars, or one fixed-shape array column (an
image) whose recorded shape becomes the feature shape.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainpipe.data.config import BUILTIN_DIGITS, DataConfig
from trainpipe.data.preprocess import (
    ColumnSpec,
    Preprocessor,
    PreprocessSpec,
    category_codes,
    fit_categories,
    fit_numeric,
)
from trainpipe.data.validation.hashing import row_hashes
from trainpipe.data.validation.io import (
    DataReadError,
    array_field,
    array_shape,
    first_line,
    load_digits_table,
    npz_table,
    read_table,
)
from trainpipe.data.validation.schema import dtype_family
from trainpipe.errors import DataError
from trainpipe.storage import Store, open_store, split_uri

SPLIT_NAMES = ("train", "validation", "test")
SUPPORTED_SUFFIXES = (".parquet", ".csv", ".jsonl", ".npz")
DIGITS_PIXEL_MAX = 16.0


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], self.y[indices])


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits sharing one feature shape and label set."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    feature_shape: list[int]
    source: str
    feature_names: list[str] = field(default_factory=list)
    split_indices: dict[str, np.ndarray] | None = None
    """Row indices of each split in the source table, when the pipeline split it."""
    preprocess: PreprocessSpec | None = None
    """Table preprocessing fitted on the training split (None for images and arrays)."""
    task: str = "classification"
    """``classification`` (y: class indices into label_names) or ``regression`` (y: float32
    targets, label_names empty)."""
    target_stats: tuple[float, float] | None = None
    """Mean and standard deviation of a streamed training split's regression targets (from
    validation's merged moments: the split is not in memory to compute them)."""

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else self.num_classes

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class RawSource:
    """The tables as read, before encoding: one table to split, or three named splits."""

    tables: dict[str, pa.Table]
    uri: str
    label_column: str

    @property
    def presplit(self) -> bool:
        return set(self.tables) == set(SPLIT_NAMES)


def read_source(cfg: DataConfig, *, endpoint_url: str | None = None) -> RawSource:
    if cfg.source == BUILTIN_DIGITS:
        return RawSource({"all": _scaled_digits()}, BUILTIN_DIGITS, "label")
    store, name = _locate(cfg.source, endpoint_url)
    if name is not None:
        table = _read(store, name)
        label = "y" if name.endswith(".npz") else cfg.label_column
        return RawSource({"all": table}, cfg.source, label)
    names = {key.rsplit("/", 1)[-1] for key in store.list()}
    tables = {}
    for split in SPLIT_NAMES:
        candidates = [f"{split}{ext}" for ext in SUPPORTED_SUFFIXES if f"{split}{ext}" in names]
        if not candidates:
            raise DataError(
                f"data error: {store.uri} has no {split}.parquet/.csv/.jsonl/.npz; a pre-split "
                "folder needs train, validation and test files"
            )
        tables[split] = _read(store, candidates[0])
    label = "y" if all(k.endswith(".npz") for k in tables) else cfg.label_column
    return RawSource(tables, store.uri, label)


def _scaled_digits() -> pa.Table:
    # Pixel intensities are 0..16; scale them to 0..1 once, at the source.
    table = load_digits_table()
    pixels = table.column("pixels").combine_chunks()
    values = pixels.values.to_numpy(zero_copy_only=False) / DIGITS_PIXEL_MAX
    field_, array = array_field("pixels", values.reshape(len(table), 1, 8, 8), [1, 8, 8])
    return table.set_column(0, field_, array)


def _locate(source: str, endpoint_url: str | None) -> tuple[Store, str | None]:
    """(store, file name) for a file source, (store of the folder, None) for a split folder."""
    if source.endswith(SUPPORTED_SUFFIXES):
        base, name = split_uri(source)
        store = open_store(base or ".", endpoint_url=endpoint_url)
        if not store.exists(name):
            raise DataError(
                f"data error: {source} does not exist; fix data.source (a file, a folder with "
                "train/validation/test files, or 'digits')"
            )
        return store, name
    store = open_store(source, endpoint_url=endpoint_url)
    if not store.list():
        raise DataError(
            f"data error: {source} does not exist or is empty; fix data.source (a "
            f"{'/'.join(SUPPORTED_SUFFIXES)} file, a folder with train/validation/test files, "
            "or 'digits')"
        )
    return store, None


def _read(store: Store, name: str) -> pa.Table:
    uri = store.uri_for(name)
    if name.endswith(".npz"):
        return _npz_table(store.get_bytes(name), name)
    try:
        return read_table(uri, endpoint_url=store.endpoint_url)
    except DataReadError as exc:
        raise DataError(f"data error: {exc}") from None


def _npz_table(data: bytes, name: str) -> pa.Table:
    try:
        return npz_table(data, name)
    except DataReadError as exc:
        raise DataError(f"data error: {exc}") from None


def _feature_columns(table: pa.Table, label_column: str, cfg: DataConfig, name: str) -> list[str]:
    return check_columns(table.schema, label_column, cfg, name)


@functools.lru_cache(maxsize=64)
def feature_layout(
    schema: pa.Schema, features: tuple[str, ...]
) -> tuple[list[int], tuple[int, ...] | None, frozenset[str], str | None]:
    """(width of each feature column, shape of an array column, the array columns, the first
    column that is not numeric) for a schema. The streaming loader converts a few thousand rows
    at a time: it works this out once and passes it to :func:`table_to_arrays` (this and even
    hashing the schema took a fifth of each conversion)."""
    widths, shape, arrays = [], None, set()
    for column in features:
        field_ = schema.field(column)
        if pa.types.is_fixed_size_list(field_.type):
            shape = tuple(array_shape(field_))
            widths.append(field_.type.list_size)
            arrays.add(column)
        elif pa.types.is_integer(field_.type) or pa.types.is_floating(field_.type):
            widths.append(1)
        else:
            return widths, shape, frozenset(arrays), column
    return widths, shape, frozenset(arrays), None


def table_to_arrays(
    table: pa.Table,
    label_column: str,
    features: list[str],
    name: str,
    cfg: DataConfig,
    out: np.ndarray | None = None,
    layout: tuple | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(x, raw labels, feature shape) of one table; ``out``: a float32 [rows, features] matrix
    to fill instead of a new one (the streaming loader's shuffle block); ``layout``:
    :func:`feature_layout` of the table's schema, when the caller already has it."""
    if len(table) == 0:
        raise DataError(f"data error: {name} has no rows; supply a non-empty dataset")
    widths, shape, arrays, bad = layout or feature_layout(table.schema, tuple(features))
    if bad is not None:
        raise DataError(
            f"data error: {name}: feature column {bad!r} is {table.schema.field(bad).type}, not "
            "numeric; list numeric columns in data.feature_columns"
        )
    # One float32 matrix filled column by column: the streaming loader calls this per row
    # group, so no intermediate per-column float32 copies and no concatenation.
    x = np.empty((len(table), sum(widths)), dtype=np.float32) if out is None else out
    offset = 0
    for column, width in zip(features, widths, strict=True):
        if column not in arrays:
            # Chunked to_numpy: no combined copy for a single chunk (a Parquet row group).
            x[:, offset] = table.column(column).to_numpy()
        else:
            values = table.column(column).combine_chunks()
            if values.null_count:
                raise DataError(f"data error: {name}: column {column!r} has missing arrays")
            flat = values.flatten().to_numpy(zero_copy_only=False)
            x[:, offset : offset + width] = flat.reshape(len(table), width)
        offset += width
    feature_shape = list(shape) if shape is not None and len(features) == 1 else [x.shape[1]]
    if cfg.feature_shape is not None:
        if x.shape[1] != math.prod(cfg.feature_shape):
            raise DataError(
                f"data error: {name} has {x.shape[1]} features per example, which cannot take "
                f"data.feature_shape {cfg.feature_shape}"
            )
        feature_shape = list(cfg.feature_shape)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(
            f"data error: {name} has {bad} examples with NaN or inf features; clean or impute "
            "them first"
        )
    labels = table.column(label_column).combine_chunks()
    if labels.null_count:
        raise DataError(f"data error: {name} has {labels.null_count} missing labels; drop them")
    return x.reshape(len(x), *feature_shape), labels.to_numpy(zero_copy_only=False), feature_shape


FEATURE_FAMILIES = frozenset({"array", "string", "bool", "int", "float", "null"})
"""Type families (the schema's ``dtype_family``) a feature column may have; an all-null column
is numeric (all missing)."""


def check_columns(schema: pa.Schema, label_column: str, cfg: DataConfig, name: str) -> list[str]:
    """The feature columns; raises naming the file when the label column is missing, a listed
    column is absent or a column's type cannot be used."""
    if label_column not in schema.names:
        raise DataError(
            f"data error: {name} has no label column {label_column!r} (columns: "
            f"{', '.join(schema.names)}); set data.label_column"
        )
    features = cfg.feature_columns or [c for c in schema.names if c != label_column]
    missing = [c for c in features if c not in schema.names]
    if missing:
        raise DataError(
            f"data error: {name} lacks feature columns {missing}; fix data.feature_columns"
        )
    unknown = sorted(set(cfg.categorical_columns or []) - set(features))
    if unknown:
        raise DataError(
            f"data error: {name}: data.categorical_columns lists {unknown}, which are not "
            f"feature columns ({', '.join(features)}); fix data.categorical_columns"
        )
    for column in features:
        t = schema.field(column).type
        if dtype_family(t) not in FEATURE_FAMILIES:
            raise DataError(
                f"data error: {name}: feature column {column!r} has type {t}, which trainpipe "
                "cannot use; convert it to numbers, strings or booleans, or leave it out of "
                "data.feature_columns"
            )
    return features


def _column_kinds(
    table: pa.Table, features: list[str], cfg: DataConfig
) -> dict[str, tuple[str, str]] | None:
    """(kind, raw type) of each feature column of a table, or None when a column is an array
    (images, .npz): those are used as they are, without table preprocessing."""
    kinds: dict[str, tuple[str, str]] = {}
    chosen = set(cfg.categorical_columns or [])
    for column in features:
        family = dtype_family(table.schema.field(column).type)
        if family == "array":
            return None
        if family in ("string", "bool"):
            kinds[column] = ("categorical", family)
        elif family == "int":
            distinct = len(pc.unique(table.column(column).drop_null()))
            low = cfg.categorical_columns is None and distinct <= cfg.max_int_categories
            categorical = column in chosen or low
            kinds[column] = ("categorical", "int") if categorical else ("numeric", "int")
        else:
            kinds[column] = ("categorical", "string") if column in chosen else ("numeric", "float")
    return kinds


def _raw_values(table: pa.Table, column: str, kind: tuple[str, str]) -> np.ndarray | list:
    values = table.column(column).combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if kind[0] == "numeric":
        x = values.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return np.where(np.isfinite(x), x, np.nan).astype(np.float32)
    if kind[1] == "string" and not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values.to_pylist()


def encode_rows(
    table: pa.Table, spec: PreprocessSpec, label_column: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(encoded rows, raw labels) of a table that arrives after ``spec`` was fitted (continual
    partitions): numbers with NaN for missing, categories as codes of the spec's categories
    (0, the reserved bucket, for missing or unseen ones), exactly as validate_data encodes."""
    absent = [c.name for c in spec.columns if c.name not in table.column_names]
    if absent:
        raise DataError(
            f"data error: {name} lacks the feature column(s) {absent[:5]} the model was trained "
            "on; add them (null for missing values) or retrain from a new source"
        )
    parts = []
    for column in spec.columns:
        values = _raw_values(table, column.name, (column.kind, column.raw_type))
        numeric = column.kind == "numeric"
        parts.append(values if numeric else category_codes(values, column.categories))
    return np.stack(parts, axis=1).astype(np.float32), _labels(table, label_column, name)


def _labels(table: pa.Table, label_column: str, name: str) -> np.ndarray:
    labels = table.column(label_column).combine_chunks()
    if labels.null_count:
        raise DataError(f"data error: {name} has {labels.null_count} missing labels; drop them")
    return labels.to_numpy(zero_copy_only=False)


def _check_classes(raw: RawSource, label_values: np.ndarray) -> None:
    if len(label_values) < 2:
        found = f"only the class {label_values[0]!s}" if len(label_values) else "no classes"
        raise DataError(
            f"data error: {raw.uri} has {found} in {raw.label_column!r}; a classifier needs "
            "examples of at least 2 classes (check data.label_column and the data)"
        )


def _encode_tables(raw: RawSource, cfg: DataConfig, features: list[str], kinds) -> Dataset:
    """Tables: numbers with NaN for missing, categories as codes of the training split's
    categories (see trainpipe.data.preprocess), and the preprocessing fitted on train only."""
    for name, table in raw.tables.items():
        if len(table) == 0:
            raise DataError(f"data error: {name} has no rows; supply a non-empty dataset")
        _feature_columns(table, raw.label_column, cfg, _display_name(raw, name))
    columns = {
        name: {c: _raw_values(table, c, kinds[c]) for c in features}
        for name, table in raw.tables.items()
    }
    labels = {
        name: _labels(table, raw.label_column, _display_name(raw, name))
        for name, table in raw.tables.items()
    }
    task = infer_task(cfg, np.concatenate(list(labels.values())), raw.uri)
    if task == "regression":
        label_names: list[str] = []
        y = {name: v.astype(np.float32) for name, v in labels.items()}
    else:
        label_values = np.unique(np.concatenate(list(labels.values())))
        _check_classes(raw, label_values)
        label_names = [str(v) for v in label_values]
        y = {name: np.searchsorted(label_values, v).astype(np.int64) for name, v in labels.items()}
    if raw.presplit:
        rows = {name: np.arange(len(y[name])) for name in SPLIT_NAMES}
        source_of = {name: name for name in SPLIT_NAMES}
        indices = None
    else:
        strata = quantile_bins(y["all"]) if task == "regression" else y["all"]
        classes = REGRESSION_SPLIT_BINS if task == "regression" else len(label_names)
        groups = row_hashes(raw.tables["all"], features)
        indices = split_indices(cfg, strata, classes, raw.uri, groups)
        rows = indices
        source_of = {name: "all" for name in SPLIT_NAMES}

    def take(split: str, column: str):
        values = columns[source_of[split]][column]
        if isinstance(values, np.ndarray):
            return values[rows[split]]
        return [values[i] for i in rows[split]]

    spec = fit_preprocess_spec(features, kinds, lambda column: take("train", column))

    def encoded(split: str) -> Split:
        x = encode_columns(spec, lambda column: take(split, column))
        return Split(x, y[source_of[split]][rows[split]])

    return Dataset(
        *(encoded(name) for name in SPLIT_NAMES),
        label_names=label_names,
        feature_shape=[len(features)],
        source=raw.uri,
        feature_names=features,
        split_indices=indices,
        preprocess=spec,
        task=task,
    )


def fit_preprocess_spec(
    features: list[str], kinds: dict[str, tuple[str, str]], train_values
) -> PreprocessSpec:
    """The preprocessing of ``features`` fitted on training values (``train_values(column)``:
    the raw values of one column, as ``_raw_values`` gives them)."""
    specs = []
    for column in features:
        kind, raw_type = kinds[column]
        values = train_values(column)
        if kind == "numeric":
            specs.append(fit_numeric(column, raw_type, values))
        else:
            specs.append(ColumnSpec(column, kind, raw_type, categories=fit_categories(values)))
    return PreprocessSpec(specs)


def encode_columns(spec: PreprocessSpec, values_of) -> np.ndarray:
    """Encoded rows ``[n, columns]`` float32: numbers as they are (NaN where missing), categories
    as codes (``values_of(column)``: a column's raw values)."""
    parts = []
    for column in spec.columns:
        values = values_of(column.name)
        parts.append(
            values if column.kind == "numeric" else category_codes(values, column.categories)
        )
    return np.stack(parts, axis=1).astype(np.float32)


def encode_table(table: pa.Table, spec: PreprocessSpec) -> np.ndarray:
    """A table's rows encoded with a fitted spec (a sharded source's row groups)."""
    kinds = {c.name: (c.kind, c.raw_type) for c in spec.columns}
    return encode_columns(spec, lambda column: _raw_values(table, column, kinds[column]))


REGRESSION_SPLIT_BINS = 5


def quantile_bins(y: np.ndarray, bins: int = REGRESSION_SPLIT_BINS) -> np.ndarray:
    """Quantile bin of each target, so a regression split is stratified by target range."""
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def infer_task(cfg: DataConfig, labels: np.ndarray, source: str) -> str:
    """``data.task``, or for ``auto``: regression when the label is numeric with fractional
    values or more than ``data.max_classes`` distinct values."""
    numeric = labels.dtype.kind in "fiu"
    if cfg.task == "regression":
        if not numeric:
            raise DataError(
                f"data error: {source}: data.task is regression but the label column holds "
                f"{labels.dtype} values, not numbers; convert them or set data.task=classification"
            )
        return "regression"
    if cfg.task == "classification" or not numeric:
        return "classification"
    fractional = labels.dtype.kind == "f" and bool(np.any(labels != np.round(labels)))
    many = len(np.unique(labels)) > cfg.max_classes
    return "regression" if fractional or many else "classification"


def encode(raw: RawSource, cfg: DataConfig) -> Dataset:
    """Encode labels onto one sorted label set and split (unless the source came split)."""
    names = list(raw.tables)
    first = raw.tables[names[0]]
    features = _feature_columns(first, raw.label_column, cfg, _display_name(raw, names[0]))
    kinds = _column_kinds(first, features, cfg)
    if kinds is not None and cfg.feature_shape is None:
        return _encode_tables(raw, cfg, features, kinds)
    converted = {
        name: table_to_arrays(table, raw.label_column, features, name, cfg)
        for name, table in raw.tables.items()
    }
    label_values = np.unique(np.concatenate([labels for _, labels, _ in converted.values()]))
    _check_classes(raw, label_values)
    label_names = [str(v) for v in label_values]
    feature_shape = converted[names[0]][2]
    feature_names = [] if len(features) == 1 and len(feature_shape) > 1 else features
    encoded = {
        name: Split(x, np.searchsorted(label_values, labels).astype(np.int64))
        for name, (x, labels, _) in converted.items()
    }
    if raw.presplit:
        return Dataset(
            encoded["train"],
            encoded["validation"],
            encoded["test"],
            label_names=label_names,
            feature_shape=feature_shape,
            source=raw.uri,
            feature_names=feature_names,
        )
    groups = row_hashes(raw.tables["all"], features)
    indices = split_indices(cfg, encoded["all"].y, len(label_names), raw.uri, groups)
    return Dataset(
        *(encoded["all"].subset(indices[name]) for name in SPLIT_NAMES),
        label_names=label_names,
        feature_shape=feature_shape,
        source=raw.uri,
        feature_names=feature_names,
        split_indices=indices,
    )


def _display_name(raw: RawSource, table: str) -> str:
    return raw.uri if table == "all" else f"{raw.uri} ({table})"


def split_indices(
    cfg: DataConfig,
    y: np.ndarray,
    num_classes: int,
    source: str = "the data",
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Seeded train/validation/test indices that put every class in every split.

    Each class is shuffled and cut on its own (at least one example in validation and test, the
    rest in train), so macro metrics are defined on every split. A class with fewer than three
    examples cannot be cut that way: one clear error names it. ``groups`` (a hash of each row's
    features): rows with identical features all go to the split of the first of them, so a
    table's own repeated rows never straddle train and test (the leakage check stays for
    splits a user made), unless that would leave a class out of a split (a table with a
    handful of distinct feature rows): then the plain split, and the leakage check speaks.
    """
    counts = np.bincount(y, minlength=num_classes)
    small = [int(c) for c in np.flatnonzero(counts < len(SPLIT_NAMES))]
    if small:
        listed = ", ".join(f"class #{c} ({counts[c]} examples)" for c in small[:5])
        raise DataError(
            f"data error: {source}: {listed} cannot appear in train, validation and test, "
            "which needs at least 3 examples per class; add examples, merge or drop the class, "
            "or supply a pre-split folder"
        )
    rng = np.random.default_rng(cfg.split_seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for label in range(num_classes):
        members = rng.permutation(np.flatnonzero(y == label))
        n = len(members)
        n_test = min(max(1, round(n * cfg.test_fraction)), n - 2)
        n_val = min(max(1, round(n * cfg.validation_fraction)), n - n_test - 1)
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    plain = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    if groups is None:
        return plain
    where = np.empty(len(y), dtype=np.int64)
    for k, name in enumerate(SPLIT_NAMES):
        where[plain[name]] = k
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    where = where[first][inverse.reshape(-1)]
    grouped = {name: np.flatnonzero(where == k) for k, name in enumerate(SPLIT_NAMES)}
    if all((np.bincount(y[rows], minlength=num_classes) > 0).all() for rows in grouped.values()):
        return grouped
    # Too few distinct feature rows to keep each class in each split: the plain split, whose
    # repeated rows the leakage check then reports.
    return plain


def split_tables(raw: RawSource, dataset: Dataset) -> dict[str, pa.Table]:
    """The raw rows of each split, for validating splits against each other (leakage)."""
    if raw.presplit or dataset.split_indices is None:
        return dict(raw.tables)
    table = raw.tables["all"]
    return {name: table.take(rows) for name, rows in dataset.split_indices.items()}


def load_dataset(cfg: DataConfig, *, endpoint_url: str | None = None) -> Dataset:
    """Read the configured source, encode it and split it (unless it comes split)."""
    return encode(read_source(cfg, endpoint_url=endpoint_url), cfg)


def with_features(dataset: Dataset) -> Dataset:
    """The dataset as the network sees it: table rows through the preprocessing fitted on the
    training split (images and arrays unchanged). Training runs on this view; the model that is
    saved takes the encoded rows and carries the preprocessing itself."""
    if dataset.preprocess is None:
        return dataset
    width = [dataset.preprocess.feature_width]
    if not isinstance(dataset.train, Split):
        # Streamed splits: each loader process preprocesses the row groups it reads.
        streamed = {
            name: split.replaced(features=True, feature_shape=width)
            for name, split in dataset.splits().items()
        }
        return replace(dataset, **streamed, feature_shape=width)
    preprocessor = Preprocessor(dataset.preprocess)
    splits = {
        name: Split(preprocessor.transform(split.x), split.y)
        for name, split in dataset.splits().items()
    }
    return replace(dataset, **splits, feature_shape=[dataset.preprocess.feature_width])


def label_subset(split: Split, fraction: float, seed: int) -> Split:
    """A stratified, seeded share of a split (at least one example per class; regression
    targets are stratified by quantile bin)."""
    if fraction >= 1.0:
        return split
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    strata = quantile_bins(split.y) if split.y.dtype.kind == "f" else split.y
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        count = max(1, round(len(members) * fraction))
        keep.append(rng.choice(members, size=count, replace=False))
    return split.subset(np.sort(np.concatenate(keep)))


def dataset_to_npz(dataset: Dataset) -> dict[str, bytes]:
    """Serialize each split as its own .npz (no pickles) for the artifact store."""
    blobs = {}
    for name, split in dataset.splits().items():
        buffer = io.BytesIO()
        np.savez(buffer, x=split.x, y=split.y)
        blobs[f"{name}.npz"] = buffer.getvalue()
    return blobs


def split_from_npz(data: bytes) -> Split:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return Split(arrays["x"], arrays["y"])


def check_source(cfg: DataConfig, *, endpoint_url: str | None = None) -> None:
    """Fail fast, before a pipeline starts, when the configured data does not exist or its
    columns cannot be used (no label column, a column of an unsupported type); the error names
    the file. Only schemas are read."""
    if cfg.source == BUILTIN_DIGITS:
        return
    store, name = _locate(cfg.source, endpoint_url)
    if name is not None:
        files = [name]
    else:
        listed = {key.rsplit("/", 1)[-1] for key in store.list()}
        files = [
            f"{split}{ext}"
            for split in SPLIT_NAMES
            for ext in SUPPORTED_SUFFIXES
            if f"{split}{ext}" in listed
        ][:1]
    for file in files:
        if file.endswith(".npz"):
            continue
        shown = cfg.source if name is not None else store.uri_for(file)
        check_columns(_schema(store, file), cfg.label_column, cfg, shown)


def _schema(store: Store, name: str) -> pa.Schema:
    """The schema of a table file, reading no more than needed (and no thread pools: the CLI
    exits right after a failed check)."""
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    uri = store.uri_for(name)
    source = pa.BufferReader(store.get_bytes(name))
    try:
        if name.endswith(".parquet"):
            return pq.read_schema(source)
        if name.endswith(".csv"):
            options = pa_csv.ReadOptions(use_threads=False)
            return pa_csv.open_csv(source, read_options=options).schema
        return pa_json.read_json(source, read_options=pa_json.ReadOptions(use_threads=False)).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = first_line(exc)
        raise DataError(
            f"data error: {uri} is unreadable: {detail}; the file is truncated or not in its "
            "format, rewrite it from its source"
        ) from None
