"""Continual retraining on partitions of Parquet shards on S3 (the moto server on loopback): the
bootstrap run end to end through kfp.local (every stage streams the shards the plan lists,
``data.format=shards``), then the next partition's warm start: the real planner and the
fine-tuning stage function in this process (the DAG's second run costs a minute of process
starts on CI for what the first already covers). Small on purpose: a few thousand rows."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.shard_reads import ShardReads
from trainpipe.artifacts import ArtifactSet
from trainpipe.config import load_config
from trainpipe.continual.driver import PROMOTED, WARM_START, plan_run, release_run
from trainpipe.continual.local import run_continual
from trainpipe.stages.finetune import run_finetune
from trainpipe.storage import open_store

pytestmark = pytest.mark.slow

ROWS = 300


def publish(store, name: str, shards: int, seed: int) -> None:
    for i in range(shards):
        rng = np.random.default_rng(seed * 100 + i)
        label = rng.integers(0, 3, ROWS)
        columns = {f"f{j}": rng.normal(0, 0.5, ROWS) + label * (j % 2) for j in range(4)}
        buffer = io.BytesIO()
        pq.write_table(pa.table({**columns, "label": label}), buffer, row_group_size=100)
        store.put_bytes(f"{name}/part-{i:03d}.parquet", buffer.getvalue())


def test_shard_partitions_on_s3_bootstrap_then_warm_start(
    s3_bucket, s3_endpoint, tmp_path, monkeypatch
):
    incoming = open_store(f"{s3_bucket}/incoming", endpoint_url=s3_endpoint)
    cfg = load_config(
        None,
        [
            f"storage.uri=file://{tmp_path}/artifacts",
            f"storage.endpoint_url={s3_endpoint}",
            f"continual.source={s3_bucket}/incoming",
            "data.format=shards",
            "data.label_column=label",
            f"data.streaming.cache_dir={tmp_path}/cache",
            "data.streaming.loader_workers=0",
            "pretrain.epochs=1",
            "finetune.epochs=3",
            "finetune.label_fraction=1.0",
            "finetune.compare_with_scratch=false",
            "finetune.ensemble_size=1",
            "gate.min_value=0.5",
            "gate.max_gap_to_linear=null",
            "gate.bootstrap_resamples=0",
            "continual.warm_start_epochs=2",
            "continual.max_forgetting=null",
        ],
    )
    publish(incoming, "2026-11-01", 5, 0)
    first = run_continual(cfg, kfp_root=tmp_path / "kfp")
    assert first.status == PROMOTED and first.mode == "bootstrap", first.reasons
    assert first.challenger is not None and first.challenger > 0.6

    run = tmp_path / "artifacts" / "runs" / first.run_id
    data = ArtifactSet.open(f"file://{run}/validate_data").get_json("dataset.json")
    assert data["format"] == "shards" and data["source"] == f"{s3_bucket}/incoming"
    metrics = ArtifactSet.open(f"file://{run}/evaluate").get_json("metrics.json")
    assert metrics["num_examples"] == data["split_sizes"]["test"] == data["fixed_test_examples"]

    publish(incoming, "2026-11-02", 3, 1)
    reads = ShardReads(monkeypatch)
    plan = plan_run(cfg, "second")
    # Drift is measured against the bootstrap's stored summary: no accepted shard is read.
    assert reads.of("2026-11-02") and not reads.of("2026-11-01"), reads.names
    assert plan.action == WARM_START and plan.warm_start_uri.endswith("/1"), plan.message
    data = ArtifactSet.open(plan.data_uri).get_json("dataset.json")
    # New training shards plus replayed ones; the test split is the fixed one plus holdouts.
    assert {s["name"].split("/")[0] for s in data["shards"]["train"]} == {
        "2026-11-01",
        "2026-11-02",
    }
    assert data["split_sizes"]["test"] > data["fixed_test_examples"]
    tuned = run_finetune(
        cfg.to_json(), "second", plan.data_uri, "", warm_start_uri=plan.warm_start_uri
    )
    history = ArtifactSet.open(tuned).get_json("history.json")
    assert len(history["history"]) == 2  # continual.warm_start_epochs, streamed
    assert history["history"][-1]["val_metric"] > 0.6
    planned = ArtifactSet.open(plan.plan_uri).get_json("plan.json")
    assert planned["outcome"]["verdicts"] == {"2026-11-02": "passed"}
    assert release_run(cfg, "second")
