"""Loading and splitting datasets into the arrays every stage trains on.

A dataset is examples ``x`` (float32, shape ``[n, *feature_shape]``) and integer class labels
``y`` with their names. Sources: the built-in digits, a Parquet/CSV table (feature columns plus a
label column), or an .npz with ``x`` and ``y`` arrays; one file the pipeline splits, or a folder
with ``train.*``, ``validation.*`` and ``test.*`` already split.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from trainpipe.data.config import BUILTIN_DIGITS, DataConfig
from trainpipe.errors import DataError
from trainpipe.storage import Store, open_store, split_uri

SPLIT_NAMES = ("train", "validation", "test")
SUPPORTED_SUFFIXES = (".parquet", ".csv", ".npz")


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

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def load_dataset(cfg: DataConfig, *, endpoint_url: str | None = None) -> Dataset:
    """Read the configured source and split it (unless it comes split)."""
    if cfg.source == BUILTIN_DIGITS:
        x, y, label_names, feature_names = _digits()
        return _split(cfg, x, y, label_names, feature_names, source=BUILTIN_DIGITS)
    store, name = _locate(cfg.source, endpoint_url)
    if name is None:
        return _load_presplit(cfg, store)
    frame = _read(store, name, cfg)
    x, y, label_names, feature_names = _encode(cfg, [frame])[0]
    return _split(cfg, x, y, label_names, feature_names, source=cfg.source)


def _digits() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel intensities are 0..16; scale to 0..1 and keep the image layout [1, 8, 8].
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, digits.target.astype(np.int64), [str(c) for c in range(10)], []


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


@dataclass(frozen=True)
class _Frame:
    """A raw table or array file before labels are encoded."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    feature_names: list[str]


def _read(store: Store, name: str, cfg: DataConfig) -> _Frame:
    data = store.get_bytes(name)
    try:
        if name.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                if "x" not in arrays or "y" not in arrays:
                    raise DataError(
                        f"data error: {name} must contain arrays 'x' and 'y' "
                        f"(found {', '.join(arrays.files)})"
                    )
                return _Frame(name, np.asarray(arrays["x"]), np.asarray(arrays["y"]), [])
        table = _read_table(name, data)
    except DataError:
        raise
    except Exception as exc:  # pyarrow/numpy raise many types for unreadable files
        raise DataError(f"data error: cannot read {name}: {exc}".splitlines()[0]) from None
    columns = table.column_names
    if cfg.label_column not in columns:
        raise DataError(
            f"data error: {name} has no label column {cfg.label_column!r} (columns: "
            f"{', '.join(columns)}); set data.label_column"
        )
    feature_names = cfg.feature_columns or [c for c in columns if c != cfg.label_column]
    missing = [c for c in feature_names if c not in columns]
    if missing:
        raise DataError(
            f"data error: {name} lacks feature columns {missing}; fix data.feature_columns"
        )
    try:
        features = np.column_stack(
            [
                table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
                for c in feature_names
            ]
        )
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"data error: {name}: feature columns must be numeric ({exc}); list numeric columns "
            "in data.feature_columns"
        ) from None
    labels = table.column(cfg.label_column).to_numpy(zero_copy_only=False)
    return _Frame(name, features, labels, feature_names)


def _read_table(name: str, data: bytes):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        return pq.read_table(pa.BufferReader(data))
    return pacsv.read_csv(pa.BufferReader(data))


def _encode(
    cfg: DataConfig, frames: list[_Frame]
) -> list[tuple[np.ndarray, np.ndarray, list[str], list[str]]]:
    """Map raw labels of all frames onto one sorted label set and shape the features."""
    for frame in frames:
        if len(frame.labels) == 0:
            raise DataError(f"data error: {frame.name} has no rows; supply a non-empty dataset")
        if frame.labels.dtype.kind == "f" and np.isnan(frame.labels).any():
            raise DataError(f"data error: {frame.name} has missing labels; drop or fill them")
    label_values = np.unique(np.concatenate([f.labels for f in frames]))
    label_names = [str(v) for v in label_values]
    encoded = []
    for frame in frames:
        y = np.searchsorted(label_values, frame.labels).astype(np.int64)
        x = frame.features.astype(np.float32)
        if cfg.feature_shape is not None:
            per_example = int(np.prod(x.shape[1:]))
            if per_example != int(np.prod(cfg.feature_shape)):
                raise DataError(
                    f"data error: {frame.name} has {per_example} features per example, which "
                    f"cannot take data.feature_shape {cfg.feature_shape}"
                )
            x = x.reshape(len(x), *cfg.feature_shape)
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise DataError(
                f"data error: {frame.name} has {bad} examples with NaN or inf features; "
                "clean or impute them first"
            )
        encoded.append((x, y, label_names, frame.feature_names))
    return encoded


def _load_presplit(cfg: DataConfig, store: Store) -> Dataset:
    names = {key.rsplit("/", 1)[-1] for key in store.list()}
    chosen: list[str] = []
    for split in SPLIT_NAMES:
        candidates = [
            f"{split}{suffix}" for suffix in SUPPORTED_SUFFIXES if f"{split}{suffix}" in names
        ]
        if not candidates:
            raise DataError(
                f"data error: {store.uri} has no {split}.parquet/.csv/.npz; a pre-split folder "
                "needs train, validation and test files"
            )
        chosen.append(candidates[0])
    frames = [_read(store, name, cfg) for name in chosen]
    encoded = _encode(cfg, frames)
    splits = [Split(x, y) for x, y, _, _ in encoded]
    _, _, label_names, feature_names = encoded[0]
    return Dataset(
        *splits,
        label_names=label_names,
        feature_shape=list(splits[0].x.shape[1:]),
        source=store.uri,
        feature_names=feature_names,
    )


def _split(
    cfg: DataConfig,
    x: np.ndarray,
    y: np.ndarray,
    label_names: list[str],
    feature_names: list[str],
    *,
    source: str,
) -> Dataset:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(label_names))
    stratify = y if counts.min() >= 3 else None  # stratifying needs a few examples per class
    indices = np.arange(len(y))
    try:
        rest, test = train_test_split(
            indices, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=stratify
        )
        val_share = cfg.validation_fraction / (1.0 - cfg.test_fraction)
        train, validation = train_test_split(
            rest,
            test_size=val_share,
            random_state=cfg.split_seed,
            stratify=None if stratify is None else y[rest],
        )
    except ValueError as exc:
        raise DataError(
            f"data error: cannot split {len(y)} examples ({exc}); supply more data or lower "
            "data.validation_fraction/test_fraction"
        ) from None
    full = Split(x, y)
    return Dataset(
        full.subset(np.sort(train)),
        full.subset(np.sort(validation)),
        full.subset(np.sort(test)),
        label_names=label_names,
        feature_shape=list(x.shape[1:]),
        source=source,
        feature_names=feature_names,
    )


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
