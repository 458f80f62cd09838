"""A sharded source as the pipeline sees it: detected from the config, split by shard, and
recorded in ``dataset.json`` so later stages stream the same shards instead of loading arrays.

    if is_sharded(cfg.data, endpoint_url):
        shard_set, splits = open_sharded(cfg.data, endpoint_url)
        record = sharded_record(shard_set, splits, cfg.data, label_values)   # into dataset.json
    ...
    streams = stream_splits(record, cfg.data.streaming, endpoint_url)      # in pretrain/finetune
"""

from __future__ import annotations

from dataclasses import asdict

from trainpipe.data.config import BUILTIN_DIGITS, DataConfig
from trainpipe.data.datasets import _feature_columns, table_to_arrays
from trainpipe.data.images import decode_one, is_image_column
from trainpipe.data.shards import ShardInfo, ShardSet, discover_shards, is_shard_prefix
from trainpipe.data.shards import split_shards as _split_shards
from trainpipe.data.streaming import StreamingConfig, StreamSplit
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
) -> dict:
    """The ``dataset.json`` of a sharded source (everything a stage needs to stream it)."""
    columns, shape, names = features_of(shard_set, cfg)
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
        "class_counts_train": class_counts_train,
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
        )
        for name, members in record["shards"].items()
    }
