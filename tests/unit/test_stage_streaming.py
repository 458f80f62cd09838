"""The stages' side of streaming: a split scored batch by batch gives the same outputs whether
it is in memory or streamed from shards, and a sharded table is encoded with the same
preprocessing as the same rows in one table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from trainpipe.data.config import DataConfig
from trainpipe.data.datasets import Split, encode_table
from trainpipe.data.preprocess import Preprocessor, PreprocessSpec
from trainpipe.data.sharded import open_sharded, sharded_record, stream_splits, table_plan
from trainpipe.data.shards import write_shards
from trainpipe.data.streaming import read_all
from trainpipe.evaluate.outputs import collect_outputs


def mixed(n: int = 600, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.2] = np.nan
    color = rng.choice(["red", "green", "blue"], size=n).astype(object)
    color[rng.random(n) < 0.2] = None
    target = np.nan_to_num(x) + (color == "red") + rng.normal(size=n) * 0.01
    return pa.table(
        {"x": x, "color": pa.array(list(color), pa.string()), "size": rng.integers(0, 3, n)}
        | {"target": target}
    )


def sharded(tmp_path, table: pa.Table, label: str) -> tuple[DataConfig, dict]:
    write_shards(table, str(tmp_path / "shards"), rows_per_shard=100, row_group_rows=100)
    cfg = DataConfig(source=str(tmp_path / "shards"), label_column=label)
    shard_set, splits = open_sharded(cfg)
    plan = table_plan(shard_set, splits["train"], cfg)
    record = sharded_record(shard_set, splits, cfg, [], [], plan, (0.5, 2.0))
    return cfg, record


def test_sharded_table_is_encoded_like_one_table(tmp_path):
    table = mixed()
    cfg, record = sharded(tmp_path, table, "target")
    assert record["task"] == "regression" and record["feature_names"] == ["x", "color", "size"]
    kinds = {c["name"]: c["kind"] for c in record["preprocess"]["columns"]}
    assert kinds == {"x": "numeric", "color": "categorical", "size": "categorical"}
    streams = stream_splits(record, cfg.streaming, None)
    test = read_all(streams["test"])
    names = [s["name"] for s in record["shards"]["test"]]
    rows = np.concatenate([np.arange(100) + 100 * int(name[5:10]) for name in names])
    # The same rows encoded by the single-table code with the stored spec.
    spec = PreprocessSpec.from_dict(record["preprocess"])
    expected = encode_table(table.take(rows), spec)
    np.testing.assert_array_equal(np.isnan(test.x), np.isnan(expected))
    np.testing.assert_array_equal(np.nan_to_num(test.x), np.nan_to_num(expected))
    np.testing.assert_allclose(test.y, table.column("target").to_numpy()[rows], rtol=1e-6)
    # Training sees preprocessed features and standardized targets.
    first = streams["train"].with_shards(streams["train"].shards[:1])
    features = read_all(
        first.replaced(features=True, feature_shape=[spec.feature_width], target_scale=(0.5, 2.0))
    )
    encoded = read_all(first)
    np.testing.assert_allclose(
        features.x, Preprocessor(spec).transform(encoded.x), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(features.y, (encoded.y - 0.5) / 2.0, rtol=1e-5)


def test_outputs_are_the_same_for_arrays_and_shards(tmp_path):
    rng = np.random.default_rng(1)
    n = 700
    x = rng.normal(size=(n, 4)).astype(np.float32)
    table = pa.table({f"f{i}": x[:, i] for i in range(4)} | {"label": rng.integers(0, 3, n)})
    write_shards(table, str(tmp_path / "shards"), rows_per_shard=100, row_group_rows=30)
    cfg = DataConfig(source=str(tmp_path / "shards"), label_column="label", feature_shape=[4])
    shard_set, splits = open_sharded(cfg)
    record = sharded_record(shard_set, splits, cfg, [0, 1, 2], [1, 1, 1])
    test = stream_splits(record, cfg.streaming, None)["test"]
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    models = {"a": lambda b: b @ weights, "b": lambda b: -b[:, :3]}
    streamed = collect_outputs(test, models, [2], top_k=2, batch_rows=64)
    arrays = read_all(test)
    in_memory = collect_outputs(Split(arrays.x, arrays.y), models, [2], top_k=2, batch_rows=1000)
    assert len(streamed) == len(test) == len(in_memory)
    np.testing.assert_array_equal(streamed.y, in_memory.y)
    for name in models:
        ours, theirs = streamed.outputs[name], in_memory.outputs[name]
        np.testing.assert_array_equal(ours.predicted, theirs.predicted)
        np.testing.assert_array_equal(ours.in_top_k, theirs.in_top_k)
        np.testing.assert_allclose(ours.true_prob, theirs.true_prob, rtol=1e-6)
    np.testing.assert_array_equal(streamed.columns[:, 0], arrays.x[:, 2])


def test_finetune_scores_over_batches_equal_the_whole_split_formulas():
    # Scores come from running sums over batches (a large validation split's logits are never
    # all held): several batches must give the whole-array accuracy, log loss, R^2 and MSE.
    import torch

    from trainpipe.data.batches import BATCH_ROWS
    from trainpipe.stages.finetune import _scores

    rng = np.random.default_rng(2)
    n = 2 * BATCH_ROWS + 123
    x = rng.normal(size=(n, 4)).astype(np.float32)
    torch.manual_seed(0)
    classifier, regressor = torch.nn.Linear(4, 3), torch.nn.Linear(4, 1)
    labels = rng.integers(0, 3, n)
    with torch.no_grad():
        logits = classifier(torch.as_tensor(x))
    accuracy, loss = _scores(classifier, Split(x, labels))
    assert accuracy == float((logits.argmax(1).numpy() == labels).mean())
    expected_loss = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels)))
    assert loss == pytest.approx(expected_loss, rel=1e-5)

    targets = (3.0 + x[:, 0] + rng.normal(size=n) * 0.1).astype(np.float32)
    with torch.no_grad():
        predicted = regressor(torch.as_tensor(x))[:, 0].numpy().astype(np.float64)
    mse = float(np.mean((predicted - targets) ** 2))
    r2, loss = _scores(regressor, Split(x, targets))
    assert loss == pytest.approx(mse, rel=1e-6)
    assert r2 == pytest.approx(1.0 - mse / float(np.var(targets.astype(np.float64))), rel=1e-6)
