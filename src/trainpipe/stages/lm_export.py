"""lm_export: the fine-tuned text classifier as a servable model package: ONNX with dynamic batch
and sequence length, parity against torch checked on the test split at two lengths, the
tokenizer it was trained with, and ``model.json``'s ``text`` section (``trainpipe.export.text``).

Writes ``runs/<run_id>/export_onnx/`` (the table DAG's folder name, which the run summary,
the gate and register read): ``model.onnx``, ``model.json``, ``tokenizer.json``,
``parity.json``. A parity failure ends the step with one line; nothing is written.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from trainpipe.export.text import export_text_package
from trainpipe.models.checkpoint import from_bytes
from trainpipe.models.text_checkpoint import load_text_classifier
from trainpipe.stages.context import make_context, run_prefix
from trainpipe.stages.lm_context import TEST_IDS, TOKENIZER, array_from


def run_lm_export(config_json: str, run_id: str, finetune_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.export
    finetuned = ctx.open(finetune_uri)
    model = load_text_classifier(from_bytes(finetuned.get_bytes("model.pt")))
    spec = finetuned.get_json("text.json")
    tokenizer = Tokenizer.from_str(finetuned.get_bytes(TOKENIZER).decode("utf-8"))
    ids = array_from(finetuned.get_bytes(TEST_IDS), f"{finetune_uri}/{TEST_IDS}")
    uri, parity = export_text_package(
        model,
        tokenizer,
        ctx.store,
        f"{run_prefix(run_id)}/export_onnx",
        name=ctx.cfg.registry.model_name,
        version=run_id,
        labels=spec["labels"],
        max_seq_len=spec["max_seq_len"],
        check_ids=ids[: cfg.parity_max_examples],
        pad_id=spec["pad_id"],
        cls_id=spec["cls_id"],
        opset=cfg.opset,
        atol=cfg.parity_atol,
        rtol=cfg.parity_rtol,
        run_id=run_id,
        started=(ctx.started_at, ctx.started_monotonic),
    )
    checked = ids[: cfg.parity_max_examples]
    worst = max(report["max_abs_error"] for report in parity)
    print(
        f"[lm_export] ONNX matches torch on {len(checked)} test texts at {len(parity)} sequence "
        f"lengths up to {checked.shape[1]} (max abs error {worst:.2e}); package {uri}",
        flush=True,
    )
    return uri
