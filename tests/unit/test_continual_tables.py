"""Continual retraining on a table with categories and missing numbers: the planner encodes
partitions the way validate_data does (the preprocessing spec fitted at bootstrap, kept for every
later partition, unseen categories in the reserved bucket), through the real planner and
finisher on a file store (no training: the plan's data artifact is what is checked)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainpipe.artifacts import ArtifactSet
from trainpipe.config import load_config
from trainpipe.continual.driver import finish_run, plan_run, release_run
from trainpipe.data.datasets import encode_rows
from trainpipe.data.stored import load_validated
from trainpipe.errors import DataError


def partition(path, n: int, seed: int, regions: list[str]) -> None:
    rng = np.random.default_rng(seed)
    region = rng.choice(regions, n)
    amount = rng.normal(0, 1, n)
    label = np.where((region == "north") ^ (amount > 0), "yes", "no")
    missing = rng.random(n) < 0.2
    table = pa.table(
        {
            "region": region,
            "amount": [None if m else float(a) for a, m in zip(amount, missing, strict=True)],
            "age": rng.normal(40, 10, n),
            "churn": label,
        }
    )
    pq.write_table(table, path)


def test_partitions_are_encoded_with_the_bootstrap_preprocessing(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    partition(incoming / "part-0000.parquet", 300, 0, ["north", "south", "east"])
    cfg = load_config(
        None,
        [
            f"storage.uri=file://{tmp_path}/artifacts",
            f"continual.source=file://{incoming}",
            "data.label_column=churn",
            "registry.model_name=churn",
        ],
    )
    first = plan_run(cfg, "r1")
    assert first.data_uri, first.message
    boot = load_validated(ArtifactSet.open(first.data_uri))
    spec = {c.name: c for c in boot.preprocess.columns}
    assert spec["region"].kind == "categorical"
    assert sorted(spec["region"].categories) == ["east", "north", "south"]
    assert spec["amount"].kind == "numeric" and spec["amount"].indicator
    amount = boot.feature_names.index("amount")
    assert np.isnan(boot.train.x[:, amount]).any()  # missing stays missing, for the model
    finish_run(cfg, "r1", first.plan_uri)
    release_run(cfg, "r1")

    # A later partition: admitted, encoded with the bootstrap's categories and scaling inputs.
    partition(incoming / "part-0001.parquet", 200, 1, ["north", "south", "east"])
    second = plan_run(cfg, "r2")
    assert second.data_uri, second.message
    later = load_validated(ArtifactSet.open(second.data_uri))
    assert later.preprocess.to_dict() == boot.preprocess.to_dict()
    region = later.feature_names.index("region")
    assert set(np.unique(later.train.x[:, region])) == {1.0, 2.0, 3.0}
    assert np.isnan(later.train.x[:, amount]).any()
    release_run(cfg, "r2")

    # What the planner calls per partition: a category the bootstrap never saw (the data
    # schema refuses one by default; a schema that allows some) gets the reserved code 0.
    table = pa.table(
        {
            "region": ["west", "north", None],
            "amount": [1.0, None, 2.0],
            "age": [30.0, 40.0, 50.0],
            "churn": ["yes", "no", "no"],
        }
    )
    x, labels = encode_rows(table, boot.preprocess, "churn", "part-0002.parquet")
    north = spec["region"].categories.index("north") + 1
    assert x[:, region].tolist() == [0.0, north, 0.0]
    assert np.isnan(x[1, amount]) and labels.tolist() == ["yes", "no", "no"]
    missing = table.drop_columns(["age"])
    with pytest.raises(
        DataError, match=r"part-0002.parquet lacks the feature column\(s\) \['age'\]"
    ):
        encode_rows(missing, boot.preprocess, "churn", "part-0002.parquet")
