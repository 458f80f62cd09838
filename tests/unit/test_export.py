"""ONNX export keeps the batch dynamic and matches torch in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainpipe.errors import ExportError
from trainpipe.export.onnx_export import check_parity, export_onnx, ort_session
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig


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
    batch = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    report = check_parity(onnx_bytes, model, batch, atol=1e-4, rtol=1e-3)
    assert report["max_abs_error"] < 1e-4 and report["prediction_agreement"] == 1.0
    with torch.no_grad():
        model.head.bias += 1.0  # the torch model drifts away from the exported graph
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(onnx_bytes, model, batch, atol=1e-4, rtol=1e-3)
