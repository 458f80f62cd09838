"""The deploy stage's infrastructure check against the real OIP v2 server on loopback.

Real parts throughout: the validate_data and export_onnx stages, a digits MLP trained for a few
seconds, the evaluation metrics computed as the evaluate stage computes them, the server started
by the stage itself, and (for the passing run) artifacts on moto's S3 server over HTTP.
"""

from __future__ import annotations

import pytest

from tests.support.digits_model import (
    config_json,
    finetune_artifact,
    registry_version,
    train_digits_mlp,
    validated_data,
)
from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.data.stored import load_validated
from trainpipe.evaluate.metrics import classification_metrics
from trainpipe.evaluate.predict import predict_logits
from trainpipe.export.onnx_export import export_onnx
from trainpipe.stages.deploy import run_deploy
from trainpipe.stages.entry import stage_entry
from trainpipe.stages.export import run_export
from trainpipe.storage import open_store, sha256_bytes

FAST = {"export": {"timing_rounds": 3}, "deploy": {"latency_requests": 50}}


def _export(cfg_json: str, run_id: str, data_uri: str, model, dataset) -> str:
    return run_export(
        cfg_json, run_id, data_uri, finetune_artifact(cfg_json, run_id, model, dataset)
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store"))
    cfg_json = config_json(store, **FAST)
    data_uri = validated_data(cfg_json, "data")
    dataset = load_validated(ArtifactSet.open(data_uri))
    model = train_digits_mlp(dataset)
    return cfg_json, data_uri, dataset, model, open_store(store)


def test_check_passes_and_records_latency_on_s3(s3_bucket, s3_endpoint, trained):
    _, _, dataset, model, _ = trained
    cfg_json = config_json(f"{s3_bucket}/ml", s3_endpoint, **FAST)
    data_uri = validated_data(cfg_json, "data")
    version = registry_version(
        cfg_json, "v1", _export(cfg_json, "v1", data_uri, model, dataset), model, dataset
    )
    deploy_uri = run_deploy(cfg_json, "v1", version, data_uri)

    report = ArtifactSet.open(deploy_uri, endpoint_url=s3_endpoint).get_json("deploy.json")
    assert report["model_uri"] == version and report["version"] == "v1"
    assert report["smoke_examples"] == 8 and len(report["predictions"]) == 8
    assert report["test_examples"] == len(dataset.test)
    assert report["served_accuracy"] == pytest.approx(report["evaluation_accuracy"], abs=0.01)
    assert report["max_abs_error_vs_package"] < 1e-5
    latency = report["latency"]
    assert latency["requests"] == 50 and 0 < latency["p50_ms"] <= latency["p99_ms"]


def _failure_line(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exited:
        stage_entry(run_deploy)(*args)  # as the component calls it
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_package_holding_another_model_fails_the_check(capsys, trained):
    """The registry version carries the evaluation of the trained model, but its model.onnx is
    an untrained one: every server answer matches model.onnx, and accuracy gives it away."""
    cfg_json, data_uri, dataset, model, store = trained
    untrained = train_digits_mlp(dataset, steps=0, seed=1)
    version = registry_version(
        cfg_json, "swap", _export(cfg_json, "swap", data_uri, untrained, dataset), model, dataset
    )
    line = _failure_line(capsys, cfg_json, "swap", version, data_uri)
    assert line.startswith(
        "trainpipe: deploy error: infrastructure check of digits-classifier version swap failed: "
        "served accuracy on the 359 test examples is "
    )
    assert "the package does not serve the evaluated model; not rolled out" in line
    assert not store.exists("runs/swap/deploy/manifest.json")


def test_a_package_for_other_inputs_fails_the_check(capsys, trained):
    """The same model exported for flat 64-feature rows, deployed against 1x8x8 image data: the
    server refuses the test examples with a 400 and the stage says so in one line."""
    cfg_json, data_uri, dataset, model, store = trained
    onnx_bytes = export_onnx(model, [64], 18)
    writer = ArtifactWriter(store, "registry/flat", stage="register", run_id="flat")
    writer.put_bytes("model.onnx", onnx_bytes)
    writer.put_json(
        "model.json",
        {
            "name": "digits-classifier",
            "version": "flat",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
            "sha256": sha256_bytes(onnx_bytes),
        },
    )
    flat = dataset.test.x.reshape(len(dataset.test), 64)
    writer.put_json(
        "metrics.json",
        classification_metrics(dataset.test.y, predict_logits(model, flat), dataset.label_names),
    )
    version = writer.commit()
    line = _failure_line(capsys, cfg_json, "flat", version, data_uri)
    assert (
        "infrastructure check of digits-classifier version flat failed: the server did not " in line
    )
    assert "answer test examples" in line and "400" in line and line.endswith("not rolled out")
