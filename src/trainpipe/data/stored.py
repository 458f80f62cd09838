"""The validated splits as the data stages store them (``validate_data``, and the continual
pipeline's planning step): ``train|validation|test.npz`` and ``dataset.json``."""

from __future__ import annotations

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.data.datasets import Dataset, dataset_to_npz, split_from_npz
from trainpipe.data.preprocess import PreprocessSpec
from trainpipe.data.sharded import SHARDS_FORMAT, stream_splits
from trainpipe.data.streaming import StreamingConfig


def load_validated(
    data: ArtifactSet, streaming: StreamingConfig | None = None, endpoint_url: str | None = None
) -> Dataset:
    """The splits as arrays, or as streamed shards when the source was sharded (then
    ``streaming`` says how to read them)."""
    info = data.get_json("dataset.json")
    if info.get("format") == SHARDS_FORMAT:
        streams = stream_splits(info, streaming or StreamingConfig(), endpoint_url)
        return Dataset(
            streams["train"],
            streams["validation"],
            streams["test"],
            label_names=info["label_names"],
            feature_shape=info["feature_shape"],
            source=info["source"],
            feature_names=info.get("feature_names", []),
            task=info.get("task", "classification"),
            preprocess=PreprocessSpec.from_dict(info["preprocess"])
            if info.get("preprocess")
            else None,
            target_stats=tuple(info["target_scale"]) if info.get("target_scale") else None,
        )
    train, validation, test = (
        split_from_npz(data.get_bytes(f"{name}.npz")) for name in ("train", "validation", "test")
    )
    return Dataset(
        train,
        validation,
        test,
        label_names=info["label_names"],
        feature_shape=info["feature_shape"],
        source=info["source"],
        feature_names=info.get("feature_names", []),
        task=info.get("task", "classification"),
        preprocess=PreprocessSpec.from_dict(info["preprocess"]) if info.get("preprocess") else None,
    )


def write_validated(writer, dataset: Dataset, **extra) -> dict:
    """Put the splits and ``dataset.json`` (with ``extra`` fields) into ``writer``; returns the
    ``dataset.json`` record."""
    for name, blob in dataset_to_npz(dataset).items():
        writer.put_bytes(name, blob)
    info = {
        "source": dataset.source,
        "label_names": dataset.label_names,
        "feature_shape": dataset.feature_shape,
        "feature_names": dataset.feature_names,
        "split_sizes": {name: len(split) for name, split in dataset.splits().items()},
        "task": dataset.task,
        "preprocess": dataset.preprocess.to_dict() if dataset.preprocess else None,
        "class_counts_train": []
        if dataset.regression
        else np.bincount(dataset.train.y, minlength=dataset.num_classes).tolist(),
        **extra,
    }
    writer.put_json("dataset.json", info)
    return info
