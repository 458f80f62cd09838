"""export_onnx: write the model as ONNX with its metadata and check ORT against torch."""

from __future__ import annotations

from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx
from trainpipe.models.checkpoint import from_bytes, load_classifier
from trainpipe.stages.context import make_context
from trainpipe.stages.data_access import load_validated
from trainpipe.stages.entry import stage_entry
from trainpipe.storage import sha256_bytes


@stage_entry
def run_export(config_json: str, run_id: str, data_uri: str, finetune_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.export
    dataset = load_validated(ctx.open(data_uri))
    payload = from_bytes(ctx.open(finetune_uri).get_bytes("model.pt"))
    model = load_classifier(payload)
    onnx_bytes = export_onnx(model, dataset.feature_shape, cfg.opset)
    parity = check_parity(
        onnx_bytes,
        model,
        dataset.validation.x[: cfg.parity_batch_size],
        atol=cfg.parity_atol,
        rtol=cfg.parity_rtol,
    )
    metadata = {
        "name": ctx.cfg.registry.model_name,
        "version": run_id,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *dataset.feature_shape]}],
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(dataset.label_names)]}
        ],
        "labels": dataset.label_names,
        "sha256": sha256_bytes(onnx_bytes),
        "opset": cfg.opset,
    }
    writer = ctx.writer("export_onnx", inputs={"model": finetune_uri})
    writer.put_bytes("model.onnx", onnx_bytes)
    writer.put_json("model.json", metadata)
    writer.put_json("parity.json", parity)
    return writer.commit(summary={"onnx_bytes": len(onnx_bytes), **parity})
