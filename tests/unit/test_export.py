"""ONNX export: dynamic batch, parity with torch on the validation split, int8 quantization within
its accuracy bound, the optimization level chosen by timing, and model.json as the server reads it.

Everything is real: torch.onnx.export, ONNX Runtime sessions, onnxruntime.quantization, a digits
MLP trained for a few seconds, the real validate_data and export_onnx stages on file://.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.support.digits_model import (
    config_json,
    finetune_artifact,
    train_digits_mlp,
    validated_data,
)
from trainpipe.artifacts import ArtifactSet
from trainpipe.data.stored import load_validated
from trainpipe.errors import ExportError
from trainpipe.export.config import OPTIMIZATION_LEVELS, ExportConfig
from trainpipe.export.onnx_export import check_parity, export_onnx, ort_session
from trainpipe.export.optimize import choose_within_noise, select_optimization_level
from trainpipe.export.quantize import compare_quantized, quantize_dynamic_int8
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.model import load_model_package
from trainpipe.stages.export import accept_int8, run_export
from trainpipe.storage import sha256_bytes


@pytest.fixture(scope="module")
def model_and_onnx():
    torch.manual_seed(0)
    model = Classifier(build_encoder(ModelConfig(name="cnn", hidden_dim=8), [1, 8, 8]), 10).eval()
    return model, export_onnx(model, [1, 8, 8], opset=18)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_batch_axis_is_dynamic(model_and_onnx, batch):
    model, onnx_bytes = model_and_onnx
    x = np.random.default_rng(batch).random((batch, 1, 8, 8), dtype=np.float32)
    (logits,) = ort_session(onnx_bytes).run(["logits"], {"input": x})
    assert logits.shape == (batch, 10)
    np.testing.assert_allclose(logits, model(torch.as_tensor(x)).detach().numpy(), atol=1e-4)


def test_single_self_contained_file(model_and_onnx):
    import onnx

    graph = onnx.load_from_string(model_and_onnx[1])
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in graph.graph.initializer
    )


def test_parity_report_and_failure(model_and_onnx):
    model, onnx_bytes = model_and_onnx
    rows = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    report = check_parity(onnx_bytes, model, rows, atol=1e-4, rtol=1e-3, batch_size=16)
    assert report["examples"] == 40 and report["batches"] == 3
    assert report["max_abs_error"] < 1e-4 and report["prediction_agreement"] == 1.0
    assert 0.0 <= report["max_rel_error"] < 1e-2
    with torch.no_grad():
        model.head.bias[3] += 1.0  # the torch model drifts away from the exported graph
    with pytest.raises(ExportError) as failure:
        check_parity(onnx_bytes, model, rows, atol=1e-4, rtol=1e-3, batch_size=16)
    message = str(failure.value)
    assert "\n" not in message
    assert "ONNX Runtime differs from torch by up to 1.00e+00 (abs" in message
    assert "on 40 validation examples" in message and "export.parity_atol" in message


# --- a real digits model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The real validate_data output on file://, the dataset, and a trained MLP exported."""
    store = str(tmp_path_factory.mktemp("store"))
    data_uri = validated_data(config_json(store), "data")
    dataset = load_validated(ArtifactSet.open(data_uri))
    model = train_digits_mlp(dataset)
    return store, data_uri, dataset, model, export_onnx(model, dataset.feature_shape, 18)


def test_int8_keeps_accuracy_within_the_bound(digits):
    _, _, dataset, _, fp32 = digits
    int8 = quantize_dynamic_int8(fp32)
    val = dataset.validation
    report = compare_quantized(
        fp32, int8, val.x, val.y, levels=("all", "all"), timing_batch_size=64, rounds=3
    )
    assert report["examples"] == len(val) and report["accuracy_fp32"] > 0.9
    assert report["accuracy_drop"] <= ExportConfig().max_accuracy_drop
    assert accept_int8(report, ExportConfig(quantize="dynamic_int8"))
    assert set(report["speedup"]) == {"batch_1", "batch_64"}
    assert all(ms > 0 for side in report["latency_ms"].values() for ms in side.values())
    assert report["bytes"]["int8"] < report["bytes"]["fp32"]


def test_int8_bound_triggers_on_a_tight_limit(digits):
    """An outlier weight on a pixel that is 0 in every digit leaves the fp32 model's answers
    unchanged but stretches int8's per-tensor scale, so quantization really costs accuracy."""
    _, _, dataset, model, _ = digits
    assert not dataset.validation.x[:, 0, 0, 0].any()
    outlier = copy.deepcopy(model)
    with torch.no_grad():
        outlier.encoder.layers[0][0].weight[0, 0] = 30.0
    fp32 = export_onnx(outlier, dataset.feature_shape, 18)
    val = dataset.validation
    report = compare_quantized(
        fp32, quantize_dynamic_int8(fp32), val.x, val.y, levels=("all", "all"),
        timing_batch_size=64, rounds=3,
    )  # fmt: skip
    drop = report["accuracy_drop"]
    assert drop > 0
    assert accept_int8(report, ExportConfig(max_accuracy_drop=drop))
    tight = ExportConfig(max_accuracy_drop=drop / 2)
    with pytest.raises(ExportError, match=r"int8 quantization drops validation accuracy by .*"
                       r"beyond export.max_accuracy_drop="):  # fmt: skip
        accept_int8(report, tight)
    assert not accept_int8(report, tight.model_copy(update={"on_accuracy_drop": "fp32"}))


def test_optimization_level_is_measured(digits):
    _, _, dataset, _, fp32 = digits
    choice = select_optimization_level(fp32, dataset.validation.x[:64], rounds=3, noise=0.05)
    assert choice["measured"] and choice["batch_size"] == 64 and choice["calls_per_round"] >= 3
    assert list(choice["median_ms"]) == list(OPTIMIZATION_LEVELS)
    assert all(ms > 0 for ms in choice["median_ms"].values())
    assert choice["fastest"] in choice["tied_within_noise"]
    assert choice["chosen"] == choice["tied_within_noise"][-1]


def test_ties_within_noise_go_to_the_higher_level():
    rounds = {"disable": [1.00] * 5, "basic": [0.99] * 5, "extended": [1.5] * 5, "all": [1.03] * 5}
    assert choose_within_noise(rounds, calls=10, noise=0.05)["chosen"] == "all"
    assert (
        choose_within_noise(rounds, calls=10, noise=0.01)["chosen"] == "basic"
    )  # ties with disable
    assert choose_within_noise(rounds, calls=10, noise=0.0)["tied_within_noise"] == ["basic"]
    noisy = {"disable": [0.8, 1.0, 1.2, 0.9, 1.1], "all": [1.15] * 5}  # spread 0.2 > 0.01
    assert choose_within_noise(noisy, calls=10, noise=0.01)["chosen"] == "all"


def test_export_stage_writes_model_json_the_server_follows(digits):
    store, data_uri, dataset, model, _ = digits
    cfg_json = config_json(store, export={"quantize": "dynamic_int8", "timing_rounds": 3})
    export_uri = run_export(
        cfg_json, "int8", data_uri, finetune_artifact(cfg_json, "int8", model, dataset)
    )
    package = ArtifactSet.open(export_uri)
    meta = package.get_json("model.json")
    onnx_bytes = package.get_bytes("model.onnx")
    assert meta["name"] == "digits-classifier" and meta["version"] == "int8"
    assert meta["platform"] == "onnxruntime_onnx" and meta["opset"] == 18
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["sha256"] == sha256_bytes(onnx_bytes)
    assert "divided by 16" in meta["preprocessing"]["description"]
    assert meta["quantized"] is True and meta["quantization"]["shipped"] is True
    assert meta["quantization"]["accuracy_drop"] <= meta["quantization"]["max_accuracy_drop"]
    level = meta["graph_optimization_level"]
    assert level == meta["graph_optimization"]["chosen"] and level in OPTIMIZATION_LEVELS
    assert set(meta["graph_optimization"]["median_ms"]) == set(OPTIMIZATION_LEVELS)
    parity = meta["parity"]
    assert parity == package.get_json("parity.json")
    assert parity["examples"] == len(dataset.validation) and parity["max_abs_error"] < 1e-4
    assert parity["max_rel_error"] >= 0.0

    served = load_model_package(export_uri, ServeConfig(log_level="warning"))
    overridden = load_model_package(
        export_uri, ServeConfig(log_level="warning", graph_optimization_level="disable")
    )
    try:
        levels = {"disable": 0, "basic": 1, "extended": 2, "all": 99}
        assert int(served.session.get_session_options().graph_optimization_level) == levels[level]
        assert int(overridden.session.get_session_options().graph_optimization_level) == 0
    finally:
        served.close()
        overridden.close()
