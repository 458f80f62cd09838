"""The language-model command end to end with a tiny config: pretrain, fine-tune, export,
report; a config mistake is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from trainpipe.artifacts import ArtifactSet
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


@pytest.mark.slow
def test_language_model_command_under_torchrun_two_processes(tmp_path):
    """DDP over 2 gloo processes: one tokenizer (rank 0's, broadcast), one report and package
    (rank 0 writes)."""
    import os
    import subprocess
    import sys

    args = ["--run-id", "ddp", "--set", f"storage.uri=file://{tmp_path}"]
    for item in TINY:
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
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert done.stdout.count('"package_uri"') == 1
    package = ArtifactSet.open(summary["package_uri"])
    assert package.get_json(METADATA_FILE)["text"]["pad_id"] == 0
