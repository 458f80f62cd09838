"""export_onnx: write the model as ONNX, check it against torch, optionally quantize it to int8,
time ONNX Runtime's optimization levels, and record it all in model.json.

    fp32 export -> optimization level (timed) -> parity vs torch on the validation split
        -> [int8: quantize, level (timed), accuracy drop + speed on the validation split, bound]
        -> model.onnx (the graph that ships), model.json, parity.json
"""

from __future__ import annotations

from trainpipe.data.streaming import materialize
from trainpipe.errors import ConfigError, ExportError
from trainpipe.export.config import ExportConfig
from trainpipe.export.metadata import model_metadata
from trainpipe.export.onnx_export import check_parity, export_onnx
from trainpipe.export.optimize import fixed_optimization_level, select_optimization_level
from trainpipe.export.quantize import compare_quantized, quantize_dynamic_int8
from trainpipe.export.serving_graph import check_serving_graph, serving_graph
from trainpipe.models.checkpoint import from_bytes, load_classifier
from trainpipe.stages.context import make_context


def choose_level(onnx_bytes: bytes, timing_batch, cfg: ExportConfig) -> dict:
    if cfg.graph_optimization_level != "measure":
        return fixed_optimization_level(cfg.graph_optimization_level)
    return select_optimization_level(
        onnx_bytes, timing_batch, rounds=cfg.timing_rounds, noise=cfg.timing_noise
    )


def accept_int8(report: dict, cfg: ExportConfig) -> bool:
    """True when int8 may ship; raises ExportError when it may not and the config says fail."""
    drop = report["accuracy_drop"]
    if drop <= cfg.max_accuracy_drop:
        return True
    if cfg.on_accuracy_drop == "fail":
        raise ExportError(
            f"export error: int8 quantization drops validation accuracy by {drop:.4f} "
            f"({report['accuracy_fp32']:.4f} -> {report['accuracy_int8']:.4f} on "
            f"{report['examples']} examples), beyond export.max_accuracy_drop="
            f"{cfg.max_accuracy_drop}; raise the bound, set export.on_accuracy_drop=fp32, or "
            "export.quantize=none"
        )
    return False


def run_export(config_json: str, run_id: str, data_uri: str, finetune_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.export
    dataset = ctx.load_data(data_uri)
    payload = from_bytes(ctx.open(finetune_uri).get_bytes("model.pt"))
    model = load_classifier(payload)
    # A streamed validation split: its first SAMPLE_ROWS rows, read shard by shard.
    validation = materialize(dataset.validation)
    timing_batch = validation.x[: cfg.timing_batch_size]

    fp32 = export_onnx(model, dataset.feature_shape, cfg.opset)
    level = choose_level(fp32, timing_batch, cfg)
    parity = check_parity(
        fp32,
        model,
        validation.x[: cfg.parity_max_examples],
        atol=cfg.parity_atol,
        rtol=cfg.parity_rtol,
        batch_size=cfg.parity_batch_size,
        level=level["chosen"],
    )
    shipped, quantization = fp32, None
    if cfg.quantize == "dynamic_int8" and dataset.regression:
        raise ConfigError(
            "config error: export.quantize=dynamic_int8 is measured by classification accuracy "
            "and is not offered for regression models; set export.quantize=none"
        )
    if cfg.quantize == "dynamic_int8":
        int8 = quantize_dynamic_int8(fp32)
        int8_level = choose_level(int8, timing_batch, cfg)
        quantization = compare_quantized(
            fp32,
            int8,
            validation.x,
            validation.y,
            levels=(level["chosen"], int8_level["chosen"]),
            timing_batch_size=cfg.timing_batch_size,
            rounds=cfg.timing_rounds,
        )
        quantization["max_accuracy_drop"] = cfg.max_accuracy_drop
        quantization["shipped"] = accept_int8(quantization, cfg)
        if quantization["shipped"]:
            shipped, level = int8, int8_level
        else:
            quantization["reason"] = "accuracy drop beyond max_accuracy_drop; fp32 ships"
    quantized = shipped is not fp32
    shipped = serving_graph(
        shipped,
        dataset.preprocess,
        dataset.label_names,
        extra_outputs=cfg.extra_outputs,
        regression=dataset.regression,
    )
    parity["serving_graph"] = check_serving_graph(
        shipped,
        model,
        dataset,
        validation.x[: cfg.parity_max_examples],
        atol=cfg.parity_atol if not quantized else None,
        rtol=cfg.parity_rtol,
        level=level["chosen"],
    )

    metadata = model_metadata(
        name=ctx.cfg.registry.model_name,
        version=run_id,
        dataset=dataset,
        onnx_bytes=shipped,
        opset=cfg.opset,
        quantized=quantized,
        extra_outputs=cfg.extra_outputs,
        graph_optimization=level,
        parity=parity,
        quantization=quantization,
        blend=payload.get("blend"),
        training=payload.get("training"),
    )
    writer = ctx.writer("export_onnx", inputs={"model": finetune_uri})
    writer.put_bytes("model.onnx", shipped)
    writer.put_json("model.json", metadata)
    writer.put_json("parity.json", parity)
    _print_summary(metadata)
    return writer.commit(
        summary={
            "onnx_bytes": len(shipped),
            "quantized": metadata["quantized"],
            "graph_optimization_level": level["chosen"],
            **{
                k: parity[k]
                for k in ("examples", "max_abs_error", "max_rel_error", "prediction_agreement")
            },
        }
    )


def _print_summary(metadata: dict) -> None:
    parity = metadata["parity"]
    level = metadata["graph_optimization"]
    timings = ", ".join(f"{k} {v:.3f}" for k, v in level.get("median_ms", {}).items())
    print(
        f"[export_onnx] parity on {parity['examples']} validation examples: max abs "
        f"{parity['max_abs_error']:.2e}, max rel {parity['max_rel_error']:.2e}; graph "
        f"optimization {level['chosen']}" + (f" (ms/call: {timings})" if timings else ""),
        flush=True,
    )
    quantization = metadata["quantization"]
    if quantization:
        print(
            f"[export_onnx] int8: accuracy {quantization['accuracy_fp32']:.4f} -> "
            f"{quantization['accuracy_int8']:.4f}, speedup {quantization['speedup']}, "
            f"{'shipped' if quantization['shipped'] else 'not shipped (fp32 ships)'}",
            flush=True,
        )
