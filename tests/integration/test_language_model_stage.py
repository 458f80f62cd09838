"""The language-model command end to end with a tiny config: pretrain, fine-tune, export,
report; a config mistake is one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from trainpipe.artifacts import ArtifactSet
from trainpipe.models.checkpoint import from_bytes
from trainpipe.serve.model import METADATA_FILE
from trainpipe.stages.language_model import main

TINY = [
    "text.vocab_size=300",
    "text.seq_len=32",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.max_seq_len=48",
    "pretrain.epochs=1",
    "pretrain.batch_size=64",
    "finetune.epochs=2",
    "classifier_text.seq_len=24",
]


@pytest.mark.slow
def test_language_model_command_writes_report_and_servable_package(tmp_path, capsys):
    store = f"file://{tmp_path}"
    args = ["--run-id", "r1", "--set", f"storage.uri={store}"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["val_perplexity"] < 300 and summary["mfu"] is None
    assert len(summary["samples"]) == 2
    report = ArtifactSet.open(summary["report_uri"]).get_json("report.json")
    first = report["language_model"]["history"][0]
    assert first["val_perplexity"] > 0
    assert first["tokens"] == report["language_model"]["tokens_per_epoch"] > 0
    assert ArtifactSet.open(summary["report_uri"]).get_bytes("curves.png").startswith(b"\x89PNG")
    assert report["classifier"]["strategy"] == "lora"
    assert all(p["prediction_agreement"] == 1.0 for p in report["classifier"]["onnx_parity"])
    package = ArtifactSet.open(summary["package_uri"])
    assert {"model.onnx", "tokenizer.json", METADATA_FILE} <= set(package.names())
    assert package.get_json(METADATA_FILE)["inputs"][0]["datatype"] == "BYTES"


def test_config_mistake_is_one_line_and_exit_2(capsys):
    assert main(["--set", "model.heads=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trainpipe: config error: model") and "\n" not in err
    assert main(["--set", "text.nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'text.nonsense'; allowed keys here: source, text_column" in err


def torchrun_command(tmp_path, run_id: str, extra: list[str]) -> subprocess.CompletedProcess:
    args = ["--run-id", run_id, "--set", f"storage.uri=file://{tmp_path}"]
    for item in TINY + extra:
        args += ["--set", item]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainpipe.stages.language_model",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def lm_weights(report_uri: str) -> dict:
    return from_bytes(ArtifactSet.open(report_uri).get_bytes("lm.pt"))["state"]


@pytest.mark.slow
def test_language_model_command_under_torchrun_ddp_and_fsdp2(tmp_path):
    """2 gloo processes. DDP: one tokenizer (rank 0's, broadcast), one report and package
    (rank 0 writes). FSDP2 (fully_shard per transformer block, the tied embedding in the root)
    with activation checkpointing, for pretraining and LoRA fine-tuning: the gathered language
    model equals DDP's bit for bit, and rank 0 exports a package ONNX Runtime agrees with."""
    ddp = torchrun_command(tmp_path, "ddp", [])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count('"package_uri"') == 1
    replicated = json.loads(ddp.stdout[ddp.stdout.index("{") :])
    package = ArtifactSet.open(replicated["package_uri"])
    assert package.get_json(METADATA_FILE)["text"]["pad_id"] == 0

    fsdp = [
        "pretrain.parallelism=fsdp",
        "finetune.parallelism=fsdp",
        "model.activation_checkpointing=true",
    ]
    done = torchrun_command(tmp_path, "fsdp", fsdp)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads(done.stdout[done.stdout.index("{") :])
    one, two = lm_weights(replicated["report_uri"]), lm_weights(sharded["report_uri"])
    assert one.keys() == two.keys() and "embed.weight" in one  # plain names, no LoRA
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=1e-6, rtol=1e-5, msg=name)
    report = ArtifactSet.open(sharded["report_uri"]).get_json("report.json")
    assert report["classifier"]["strategy"] == "lora"
    assert 0 < report["classifier"]["trainable_params"] < report["language_model"]["num_params"]
    assert all(p["prediction_agreement"] == 1.0 for p in report["classifier"]["onnx_parity"])
    # Fine-tuning trains the same adapters and head (its optimizer groups are rebuilt over the
    # sharded parameters), so every epoch's losses agree too.
    ddp_report = ArtifactSet.open(replicated["report_uri"]).get_json("report.json")
    for ours, theirs in zip(
        report["classifier"]["history"], ddp_report["classifier"]["history"], strict=True
    ):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    assert (
        report["classifier"]["history"][-1]["val_loss"]
        < report["classifier"]["history"][0]["val_loss"]
    )
