"""A sharded source as the pipeline sees it: detected from the config, split by shard, and
recorded in ``dataset.json`` so later stages stream the same shards instead of loading arrays.

    if is_sharded(cfg.data, endpoint_url):
        shard_set, splits = open_sharded(cfg.data, endpoint_url)
        record = sharded_record(shard_set, splits, cfg.data, label_values)   # into dataset.json
    ...
    streams = stream_splits(record, cfg.data.streaming, endpoint_url)      # in pretrain/finetune
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from trainpipe.data.config import BUILTIN_DIGITS, DataConfig
from trainpipe.data.datasets import (
    _column_kinds,
    _feature_columns,
    _labels,
    _raw_values,
    fit_preprocess_spec,
    infer_task,
    table_to_arrays,
)
from trainpipe.data.images import decode_one, is_image_column
from trainpipe.data.preprocess import PreprocessSpec
from trainpipe.data.shards import ShardInfo, ShardSet, discover_shards, is_shard_prefix
from trainpipe.data.shards import split_shards as _split_shards
from trainpipe.data.streaming import SAMPLE_ROWS, StreamingConfig, StreamSplit
from trainpipe.errors import DataError

SHARDS_FORMAT = "shards"


def is_sharded(cfg: DataConfig, endpoint_url: str | None = None) -> bool:
    if cfg.format != "auto":
        return cfg.format == "shards"
    if cfg.source == BUILTIN_DIGITS:
        return False
    return is_shard_prefix(cfg.source, endpoint_url=endpoint_url)


def open_sharded(
    cfg: DataConfig, endpoint_url: str | None = None
) -> tuple[ShardSet, dict[str, list[ShardInfo]]]:
    shard_set = discover_shards(cfg.source, endpoint_url=endpoint_url, cache=cfg.streaming.cache())
    splits = _split_shards(
        shard_set.shards,
        validation_fraction=cfg.validation_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
    )
    return shard_set, splits


@dataclass(frozen=True)
class TablePlan:
    """How a sharded table is encoded, decided from a sample of its training shards."""

    task: str
    """``classification`` or ``regression`` (``data.task``, or inferred from the sample)."""
    features: list[str]
    preprocess: PreprocessSpec
    target_scale: tuple[float, float] | None = None
    """A regression target's mean and standard deviation in the sample."""


def training_sample(
    shard_set: ShardSet, train: list[ShardInfo], max_rows: int = SAMPLE_ROWS
) -> pa.Table:
    """About ``max_rows`` rows of the training split: whole row groups spread evenly over its
    shards (the first shards alone could be one partition, one day, one class)."""
    groups = [(shard, g) for shard in train for g in range(len(shard.row_group_rows))]
    per_group = max(1, sum(s.rows for s in train) // max(1, len(groups)))
    wanted = min(len(groups), max(1, -(-max_rows // per_group)))
    picked = np.unique(np.linspace(0, len(groups) - 1, wanted).round().astype(int))
    tables = [shard_set.read_row_group(*groups[i]) for i in picked]
    return pa.concat_tables(tables, promote_options="permissive")


def table_plan(shard_set: ShardSet, train: list[ShardInfo], cfg: DataConfig) -> TablePlan | None:
    """Task and preprocessing of a sharded *table* (None for image or array shards, which are
    used as they are): the kinds of columns and the preprocessing are fitted on a sample of the
    training split (``training_sample``), as a single table's are on its training split."""
    sample = training_sample(shard_set, train)
    name = shard_set.store.uri_for(train[0].name)
    if any(is_image_column(f.type) for f in sample.schema) and cfg.feature_columns is None:
        return None
    features = _feature_columns(sample, cfg.label_column, cfg, name)
    kinds = _column_kinds(sample, features, cfg)
    if kinds is None or cfg.feature_shape is not None:
        return None
    labels = _labels(sample, cfg.label_column, name)
    task = infer_task(cfg, labels, shard_set.uri)
    spec = fit_preprocess_spec(
        features, kinds, lambda column: _raw_values(sample, column, kinds[column])
    )
    if task == "classification":
        return TablePlan(task, features, spec)
    scale = (float(labels.mean()), float(labels.std()) or 1.0)
    return TablePlan(task, features, spec, scale)


def features_of(shard_set: ShardSet, cfg: DataConfig) -> tuple[list[str], list[int], list[str]]:
    """(feature columns, feature shape, feature names) from the first row group."""
    first = shard_set.shards[0]
    table = shard_set.read_row_group(first, 0)
    name = shard_set.store.uri_for(first.name)
    images = [f.name for f in table.schema if is_image_column(f.type)]
    if images and cfg.feature_columns is None:
        # Image shards: the encoded image is the input; other columns (keys) are not features.
        if cfg.label_column not in table.column_names:
            raise DataError(
                f"data error: {name} has no label column {cfg.label_column!r} (columns: "
                f"{', '.join(table.column_names)}); set data.label_column"
            )
        data = table.column(images[0])[0].as_py()
        try:
            shape = cfg.feature_shape or list(decode_one(data, None).shape)
        except ValueError as exc:
            raise DataError(f"data error: shard {name} row 0: {exc}") from None
        return images[:1], shape, []
    columns = _feature_columns(table, cfg.label_column, cfg, name)
    _, _, shape = table_to_arrays(table, cfg.label_column, columns, name, cfg)
    names = [] if len(columns) == 1 and len(shape) > 1 else columns
    return columns, shape, names


def sharded_record(
    shard_set: ShardSet,
    splits: dict[str, list[ShardInfo]],
    cfg: DataConfig,
    label_values: list,
    class_counts_train: list[int],
    plan: TablePlan | None = None,
    target_scale: tuple[float, float] | None = None,
) -> dict:
    """The ``dataset.json`` of a sharded source (everything a stage needs to stream it).
    ``plan``: a table's task and preprocessing; ``target_scale``: a regression target's mean
    and standard deviation over the training split."""
    if plan is None:
        columns, shape, names = features_of(shard_set, cfg)
    else:
        columns, shape, names = plan.features, [len(plan.features)], plan.features
    regression = plan is not None and plan.task == "regression"
    return {
        "format": SHARDS_FORMAT,
        "source": shard_set.uri,
        "label_column": cfg.label_column,
        "label_values": label_values,
        "label_names": [str(v) for v in label_values],
        "feature_columns": columns,
        "feature_shape": shape,
        "feature_names": names,
        "split_seed": cfg.split_seed,
        "shards": {name: [asdict(s) for s in members] for name, members in splits.items()},
        "split_sizes": {name: sum(s.rows for s in members) for name, members in splits.items()},
        "class_counts_train": [] if regression else class_counts_train,
        "task": plan.task if plan else "classification",
        "preprocess": plan.preprocess.to_dict() if plan else None,
        "target_scale": list(target_scale or plan.target_scale) if regression else None,
    }


def record_summary(record: dict) -> dict:
    """The summary a passed sharded data artifact set is committed with (validate_data's, or a
    continual plan's)."""
    return {
        "examples": sum(record["split_sizes"].values()),
        **record["split_sizes"],
        "shards": {name: len(members) for name, members in record["shards"].items()},
        "verdict": "passed",
        "warnings": len(record.get("warnings", [])),
    }


def stream_splits(
    record: dict, streaming: StreamingConfig, endpoint_url: str | None, seed: int = 0
) -> dict[str, StreamSplit]:
    return {
        name: StreamSplit(
            record["source"],
            [
                ShardInfo(s["name"], s["rows"], tuple(s["row_group_rows"]), s["sha256"])
                for s in members
            ],
            record["label_column"],
            record["feature_columns"],
            record["feature_shape"],
            record["label_values"],
            streaming,
            seed=seed,
            endpoint_url=endpoint_url,
            preprocess=record.get("preprocess"),
            task=record.get("task", "classification"),
        )
        for name, members in record["shards"].items()
    }
