"""From raw tables to the arrays every stage trains on.

Sources are read as Arrow tables by :mod:`trainpipe.data.validation.io` (Parquet, CSV, JSONL,
the built-in digits) or from an .npz with ``x`` and ``y`` arrays; a source is one file the
pipeline splits, or a folder holding ``train.*``, ``validation.*`` and ``test.*``.

A dataset is then examples ``x`` (float32, ``[n, *feature_shape]``) and integer labels ``y``
with their names. Feature columns are numeric scalars, or one fixed-shape array column (an
image) whose recorded shape becomes the feature shape.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from trainpipe.data.config import BUILTIN_DIGITS, DataConfig
from trainpipe.data.validation.io import (
    DataReadError,
    array_field,
    array_shape,
    load_digits_table,
    npz_table,
    read_table,
)
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

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

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
    if label_column not in table.column_names:
        raise DataError(
            f"data error: {name} has no label column {label_column!r} (columns: "
            f"{', '.join(table.column_names)}); set data.label_column"
        )
    features = cfg.feature_columns or [c for c in table.column_names if c != label_column]
    missing = [c for c in features if c not in table.column_names]
    if missing:
        raise DataError(
            f"data error: {name} lacks feature columns {missing}; fix data.feature_columns"
        )
    return features


def table_to_arrays(
    table: pa.Table, label_column: str, features: list[str], name: str, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(x, raw labels, feature shape) of one table."""
    if len(table) == 0:
        raise DataError(f"data error: {name} has no rows; supply a non-empty dataset")
    arrays, shape = [], None
    for column in features:
        field_ = table.schema.field(column)
        values = table.column(column).combine_chunks()
        if pa.types.is_fixed_size_list(field_.type):
            if values.null_count:
                raise DataError(f"data error: {name}: column {column!r} has missing arrays")
            shape = array_shape(field_)
            flat = values.values.to_numpy(zero_copy_only=False)
            arrays.append(flat.reshape(len(table), -1).astype(np.float32))
            continue
        if not (pa.types.is_integer(field_.type) or pa.types.is_floating(field_.type)):
            raise DataError(
                f"data error: {name}: feature column {column!r} is {field_.type}, not numeric; "
                "list numeric columns in data.feature_columns"
            )
        arrays.append(values.to_numpy(zero_copy_only=False).astype(np.float32)[:, None])
    x = np.concatenate(arrays, axis=1)
    feature_shape = list(shape) if shape is not None and len(features) == 1 else [x.shape[1]]
    if cfg.feature_shape is not None:
        if x.shape[1] != int(np.prod(cfg.feature_shape)):
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


def encode(raw: RawSource, cfg: DataConfig) -> Dataset:
    """Encode labels onto one sorted label set and split (unless the source came split)."""
    names = list(raw.tables)
    first = raw.tables[names[0]]
    features = _feature_columns(first, raw.label_column, cfg, names[0])
    converted = {
        name: table_to_arrays(table, raw.label_column, features, name, cfg)
        for name, table in raw.tables.items()
    }
    label_values = np.unique(np.concatenate([labels for _, labels, _ in converted.values()]))
    if len(label_values) < 2:
        found = f"only the class {label_values[0]!s}" if len(label_values) else "no classes"
        raise DataError(
            f"data error: {raw.uri} has {found} in {raw.label_column!r}; a classifier needs "
            "examples of at least 2 classes (check data.label_column and the data)"
        )
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
    indices = split_indices(cfg, encoded["all"].y, len(label_names))
    return Dataset(
        *(encoded["all"].subset(indices[name]) for name in SPLIT_NAMES),
        label_names=label_names,
        feature_shape=feature_shape,
        source=raw.uri,
        feature_names=feature_names,
        split_indices=indices,
    )


def split_indices(cfg: DataConfig, y: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Stratified (when every class has a few examples), seeded train/validation/test indices."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=num_classes)
    stratify = y if counts.min() >= 3 else None
    indices = np.arange(len(y))
    try:
        rest, test = train_test_split(
            indices, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=stratify
        )
        train, validation = train_test_split(
            rest,
            test_size=cfg.validation_fraction / (1.0 - cfg.test_fraction),
            random_state=cfg.split_seed,
            stratify=None if stratify is None else y[rest],
        )
    except ValueError as exc:
        raise DataError(
            f"data error: cannot split {len(y)} examples ({exc}); supply more data or lower "
            "data.validation_fraction/test_fraction"
        ) from None
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


def split_tables(raw: RawSource, dataset: Dataset) -> dict[str, pa.Table]:
    """The raw rows of each split, for validating splits against each other (leakage)."""
    if raw.presplit or dataset.split_indices is None:
        return dict(raw.tables)
    table = raw.tables["all"]
    return {name: table.take(rows) for name, rows in dataset.split_indices.items()}


def load_dataset(cfg: DataConfig, *, endpoint_url: str | None = None) -> Dataset:
    """Read the configured source, encode it and split it (unless it comes split)."""
    return encode(read_source(cfg, endpoint_url=endpoint_url), cfg)


def label_subset(split: Split, fraction: float, seed: int) -> Split:
    """A stratified, seeded share of a split (at least one example per class)."""
    if fraction >= 1.0:
        return split
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for label in np.unique(split.y):
        members = np.flatnonzero(split.y == label)
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
    """Fail fast, before a pipeline starts, when the configured data does not exist."""
    if cfg.source != BUILTIN_DIGITS:
        _locate(cfg.source, endpoint_url)
