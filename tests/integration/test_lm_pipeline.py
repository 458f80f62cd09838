"""The language-model DAG: compiled by the real KFP compiler (DAG shape, GPUs, retries) and run
end to end through kfp.local by `trainpipe run --config docs/examples/language-model.yaml` on
tiny sizes: text data and tokenizer, LM pretraining, LoRA fine-tuning, evaluation, ONNX export,
the shared gate, register and deploy; then the registered version, served by the real server
following the registry, answers text requests from tritonclient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.test_compile import CLUSTER, executor_for, load_ir, walk_tasks
from trainpipe.cli import main
from trainpipe.config import load_config
from trainpipe.pipelines.training import compile_pipeline
from trainpipe.registry import Registry
from trainpipe.serve import ServeConfig, start_in_background
from trainpipe.stages.gate import run_gate
from trainpipe.storage import open_store

EXAMPLE = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "language-model.yaml")
LM_TASKS = {
    "lm-data",
    "lm-pretrain",
    "lm-finetune",
    "lm-evaluate",
    "lm-export",
    "gate",
    "register",
    "deploy",
}
TRAINING = {"lm-pretrain", "lm-finetune"}
# Tiny sizes for 2 shared CPU cores: the reviews double as the pretraining corpus.
TINY = [
    "language_model.text.source=builtin:reviews",
    "language_model.text.vocab_size=300",
    "language_model.text.seq_len=32",
    "language_model.model.dim=32",
    "language_model.model.depth=1",
    "language_model.model.heads=2",
    "language_model.model.max_seq_len=64",
    "language_model.pretrain.epochs=1",
    "language_model.pretrain.device=cpu",
    "language_model.finetune.epochs=3",
    "language_model.finetune.device=cpu",
    "gate.min_value=0.6",
    "gate.bootstrap_resamples=100",
    "deploy.latency_requests=20",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("ir") / "lm.yaml"
    compile_pipeline(load_config(EXAMPLE, CLUSTER), str(path))
    return load_ir(path)


def test_lm_dag_shape_and_gate(compiled):
    spec, _ = compiled
    tasks = walk_tasks(spec)
    assert {n for n in tasks if not n.startswith("condition")} == LM_TASKS
    assert set(tasks["lm-finetune"]["dependentTasks"]) == {"lm-data", "lm-pretrain"}
    assert set(tasks["gate"]["dependentTasks"]) == {"lm-data", "lm-evaluate", "lm-export"}
    condition = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert "promote" in condition["triggerPolicy"]["condition"]
    gated = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gated) == {"register", "deploy"}
    # The shared gate and register take the text evaluation and export.
    gate_inputs = tasks["gate"]["inputs"]["parameters"]
    assert gate_inputs["export_uri"]["taskOutputParameter"]["producerTask"] == "lm-export"
    assert gate_inputs["evaluate_uri"]["taskOutputParameter"]["producerTask"] == "lm-evaluate"
    register_inputs = tasks["register"]["inputs"]["parameters"]
    assert register_inputs["export_uri"] == {
        "componentInputParameter": "pipelinechannel--lm-export-Output"
    }


def test_lm_training_steps_request_gpus_and_retry(compiled):
    spec, _ = compiled
    tasks = walk_tasks(spec)
    for name in LM_TASKS:
        container = executor_for(spec, name)
        accelerator = container.get("resources", {}).get("accelerator")
        assert container["image"] == "registry.example.com/ml/trainpipe:9.9.9"
        if name in TRAINING:
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert int(accelerator["resourceCount"]) == 4
            assert tasks[name]["retryPolicy"]["maxRetryCount"] == 3
        else:
            assert accelerator is None
            assert "retryPolicy" not in tasks[name]


def test_hf_checkpoint_dag_has_no_pretraining(tmp_path):
    path = tmp_path / "hf.yaml"
    overrides = [*CLUSTER, "language_model.hf_checkpoint_uri=s3://bucket/my-bert"]
    compile_pipeline(load_config(EXAMPLE, overrides), str(path))
    spec, _ = load_ir(path)
    tasks = walk_tasks(spec)
    assert "lm-pretrain" not in tasks
    pretrain_uri = tasks["lm-finetune"]["inputs"]["parameters"]["pretrain_uri"]
    assert pretrain_uri["runtimeValue"]["constant"] == ""
    assert "accelerator" in executor_for(spec, "lm-finetune")["resources"]


def test_compile_cli_builds_the_lm_dag_and_refuses_continual(tmp_path):
    out = tmp_path / "p.yaml"
    command = [sys.executable, "-m", "trainpipe", "compile", "--output", str(out)]
    done = subprocess.run(
        [*command, "--set", "language_model.enabled=true"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "lm-pretrain" in walk_tasks(load_ir(out)[0])
    refused = subprocess.run(
        [*command, "--set", "language_model.enabled=true", "--continual"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "trainpipe: usage error: --continual retrains table/image models; the language-model "
        "DAG has no continual pipeline (drop --continual or language_model.enabled)"
    ]


@pytest.mark.slow
def test_lm_dag_runs_locally_promotes_and_serves_text(tmp_path, capsys):
    tritonclient_http = pytest.importorskip("tritonclient.http")
    store_dir = tmp_path / "store"
    overrides = [arg for override in TINY for arg in ("--set", override)]
    code = main(["run", "--config", EXAMPLE, "--output", str(store_dir), *overrides])
    out = capsys.readouterr().out
    assert code == 0
    assert "gate: PROMOTE" in out and "champion: version 1" in out
    assert "language model (causal, " in out

    store = open_store(f"file://{store_dir}")
    run_dir = next(p for p in (store_dir / "runs").iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [
        "lm_data",
        "lm_pretrain",
        "lm_finetune",
        "evaluate",
        "export_onnx",
        "gate",
        "register",
        "deploy",
    ]
    assert {s["status"] for s in summary["stages"]} == {"done"}
    decision = json.loads((run_dir / "gate" / "decision.json").read_text())
    rules = {r["rule"]: r for r in decision["rules"]}
    assert rules["max_perplexity"]["passed"]
    assert rules["max_perplexity"]["values"]["max"] == 2000.0
    evaluation = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    report = (run_dir / "evaluate" / "report.html").read_text()
    perplexity = evaluation["language_model"]["test_perplexity"]
    assert f"test perplexity {perplexity:.2f}" in report

    registry = Registry(store, "reviews")
    version = registry.verify_version(registry.champion().version)
    assert {"model.onnx", "model.json", "tokenizer.json", "model.pt", "lineage.json"} <= set(
        version.names()
    )
    assert version.get_json("lineage.json")["pretrain"].endswith("/lm_pretrain")

    # The gate on this run's stored evaluation, with a perplexity bound the tiny LM misses.
    strict = load_config(
        EXAMPLE, [f"storage.uri={store_dir}", *TINY, "gate.max_perplexity=2.0"]
    ).to_json()
    rejected, _ = run_gate(
        strict,
        "recheck",  # artifact sets are immutable: the recheck is a run of its own
        f"{store.uri}/runs/{run_dir.name}/evaluate",
        f"{store.uri}/runs/{run_dir.name}/export_onnx",
    )
    assert rejected == "reject"
    last = json.loads((store_dir / "runs" / "recheck" / "gate" / "decision.json").read_text())
    failed = {r["rule"] for r in last["rules"] if not r["passed"]}
    assert "max_perplexity" in failed

    labelled = json.loads((run_dir / "lm_data" / "labelled_text.json").read_text())
    texts = labelled["splits"]["test"]["texts"]
    truth = [labelled["label_names"][i] for i in labelled["splits"]["test"]["labels"]]
    config = ServeConfig(port=0, log_level="warning")
    with start_in_background(registry.uri, config) as running:
        client = tritonclient_http.InferenceServerClient(running.url.removeprefix("http://"))
        tensor = tritonclient_http.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object))
        result = client.infer("reviews", [tensor])
        labels = [v.decode() for v in result.as_numpy("label")]
        client.close()
    assert result.as_numpy("probabilities").shape == (len(texts), 2)
    served_accuracy = np.mean([a == b for a, b in zip(labels, truth, strict=True)])
    assert served_accuracy == pytest.approx(evaluation["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_lm_training_steps_run_under_torchrun_with_two_processes(tmp_path):
    """nproc_per_node 2 (a pod with two GPUs; gloo on CPU here): lm_pretrain and lm_finetune
    start torchrun in their pod through stages/pod.py and rank 0 commits; here a masked
    (BERT-style) LM with a WordPiece tokenizer, pretrained with FSDP2 (one unit per block,
    activation checkpointing) and fine-tuned with DDP from the whole weights rank 0 stored."""
    from trainpipe.artifacts import ArtifactSet
    from trainpipe.models.checkpoint import from_bytes
    from trainpipe.models.lm import LMConfig, TransformerLM
    from trainpipe.stages.lm_data import run_lm_data
    from trainpipe.stages.lm_finetune import run_lm_finetune
    from trainpipe.stages.lm_pretrain import run_lm_pretrain

    overrides = [
        f"storage.uri={tmp_path.as_uri()}",
        *TINY,
        "language_model.pretrain.nproc_per_node=2",
        "language_model.pretrain.parallelism=fsdp",
        "language_model.model.activation_checkpointing=true",
        "language_model.finetune.nproc_per_node=2",
        "language_model.finetune.epochs=1",
        "language_model.model.kind=masked",
        "language_model.text.tokenizer=wordpiece",
    ]
    cfg = load_config(EXAMPLE, overrides).to_json()
    run, data_uri = run_lm_data(cfg, "ddp")
    pretrain_uri = run_lm_pretrain(cfg, run, data_uri)
    finetune_uri = run_lm_finetune(cfg, run, data_uri, pretrain_uri)
    pretrained, finetuned = ArtifactSet.open(pretrain_uri), ArtifactSet.open(finetune_uri)
    assert pretrained.summary["processes"] == finetuned.summary["processes"] == 2
    assert pretrained.summary["parallelism"] == "fsdp"
    assert finetuned.summary["parallelism"] == "ddp"
    assert pretrained.summary["kind"] == "masked"
    # rank 0 stored whole plain tensors (not its shard, not DTensors): a fresh model of the
    # configured size loads them strictly.
    payload = from_bytes(pretrained.get_bytes("lm.pt"))
    vocab = ArtifactSet.open(data_uri).summary["vocab_size"]
    model = TransformerLM(LMConfig(**payload["config"]), vocab)
    model.load_state_dict(payload["state"])
    assert all(type(t) is torch.Tensor for t in payload["state"].values())
    assert payload["state"]["embed.weight"].shape == (vocab, 32)
    assert pretrained.get_json("report.json")["samples"] == []  # samples are causal-only
    assert {"lm.pt", "tokenizer.json", "report.json"} <= set(pretrained.names())
    assert {"model.pt", "test_ids.npy", "text.json"} <= set(finetuned.names())
