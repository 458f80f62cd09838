"""The table pipeline on CUDA: the stage functions the DAG runs (validate, pretrain, finetune,
evaluate, export, gate), in this process, with ``device: auto`` picking the GPU as it does in a
GPU pod; bf16 pretraining, fp16 fine-tuning with dynamic loss scaling, and a streamed sharded
source whose batches go through pinned memory. Skipped (not failed) without a CUDA GPU; run
them on a GPU machine with ``bash scripts/gpu_checks.sh``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from trainpipe.config import load_config
from trainpipe.data.shards import write_shards
from trainpipe.stages.evaluate import run_evaluate
from trainpipe.stages.export import run_export
from trainpipe.stages.finetune import run_finetune
from trainpipe.stages.gate import run_gate
from trainpipe.stages.pretrain import run_pretrain
from trainpipe.stages.validate import run_validate
from trainpipe.storage import open_store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def grades(n: int, seed: int = 0) -> pa.Table:
    """Three classes shifted along half the columns, a categorical column and a few missing
    values: every preprocessing step runs on the GPU path too."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["low", "mid", "high"], size=n)
    center = np.select([label == "low", label == "mid"], [-2.0, 0.0], 2.0)
    columns = {f"x{i}": rng.normal(size=n) * 10 + center * 10 * (i % 2) for i in range(6)}
    columns["x0"][rng.random(n) < 0.03] = np.nan
    region = rng.choice(["north", "south", "east"], size=n)
    return pa.table({**columns, "region": region, "grade": label})


def run_stages(store: str, source: str, *extra: str) -> dict:
    config_json = load_config(
        overrides=[
            f"storage.uri=file://{store}",
            f"data.source={source}",
            "data.label_column=grade",
            "pretrain.epochs=3",
            "pretrain.precision=bf16",
            "finetune.epochs=8",
            "finetune.precision=fp16",
            "finetune.ensemble_size=1",
            "gate.slice_columns=[]",
            "gate.bootstrap_resamples=200",
            *extra,
        ]
    ).to_json()
    _, data_uri = run_validate(config_json, "gpu")
    finetune_uri = run_finetune(
        config_json, "gpu", data_uri, run_pretrain(config_json, "gpu", data_uri)
    )
    evaluate_uri = run_evaluate(config_json, "gpu", data_uri, finetune_uri)
    export_uri = run_export(config_json, "gpu", data_uri, finetune_uri)
    decision, _ = run_gate(config_json, "gpu", evaluate_uri, export_uri)
    files = open_store(f"file://{store}")
    return {
        "decision": decision,
        "pretrain": files.get_json("runs/gpu/pretrain/manifest.json")["summary"],
        "finetune": files.get_json("runs/gpu/finetune/manifest.json")["summary"],
        "metrics": files.get_json("runs/gpu/evaluate/metrics.json"),
        "gate": files.get_json("runs/gpu/gate/decision.json"),
    }


def test_table_stages_train_on_cuda_with_bf16_and_fp16(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(grades(1200), tmp_path / "grades.parquet")
    run = run_stages(str(tmp_path / "store"), str(tmp_path / "grades.parquet"))
    print(json.dumps({k: run[k] for k in ("pretrain", "finetune")}, default=str)[:4000])
    assert run["pretrain"]["device"] == "cuda" and run["pretrain"]["precision"] == "bf16"
    assert run["finetune"]["device"] == "cuda" and run["finetune"]["precision"] == "fp16"
    assert run["metrics"]["accuracy"] > 0.85, run["metrics"]
    # The gate scored the GPU-trained network against the baselines on the same split.
    rule = next(r for r in run["gate"]["rules"] if r["rule"] == "beats_linear_baseline")
    assert rule["values"]["network"] == pytest.approx(run["metrics"]["accuracy"], abs=1e-3), rule


def test_streamed_shards_train_on_cuda(tmp_path):
    write_shards(grades(1600, seed=1), str(tmp_path / "shards"), rows_per_shard=200)
    run = run_stages(
        str(tmp_path / "store"),
        str(tmp_path / "shards"),
        f"data.streaming.cache_dir={tmp_path / 'cache'}",
        "data.streaming.loader_workers=2",
    )
    assert run["finetune"]["device"] == "cuda"
    assert run["metrics"]["accuracy"] > 0.85, run["metrics"]
    assert run["metrics"]["num_examples"] > 0
