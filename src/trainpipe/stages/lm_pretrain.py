"""lm_pretrain: pretrain the causal or masked language model on the corpus ``lm_data`` checked,
tokenized and packed, with the tokenizer it stored.

Writes ``runs/<run_id>/lm_pretrain/``: ``lm.pt`` (config and weights), ``tokenizer.json``,
``report.json`` (size, FLOPs per token, learning curves in tokens, validation/test perplexity,
tokens/s and MFU records, samples), ``history.json`` and ``curves.png``. Checkpoints go to the
run's checkpoint folder, so a retried pod resumes where the killed one stopped. With
``pretrain.nproc_per_node`` > 1 (``auto``: every GPU of the pod) it trains under torchrun in
its pod (``stages/pod.py``), DDP or FSDP2 (``pretrain.parallelism``; the sharded weights are
gathered whole after training, so rank 0 stores a plain ``lm.pt``).
"""

from __future__ import annotations

from trainpipe.evaluate.plots import learning_curves_png
from trainpipe.models.checkpoint import to_bytes
from trainpipe.stages.context import make_context
from trainpipe.stages.lm_context import TOKENIZER, packed_splits, tokenizer_in
from trainpipe.stages.training_run import checkpoint_store, run_training, setup_world
from trainpipe.train.lm import PackedText, pretrain_language_model

STAGE = "lm_pretrain"


def run_lm_pretrain(config_json: str, run_id: str, data_uri: str, metrics=None) -> str:
    """Pretrain in this process, or under torchrun with one process per GPU of the pod
    (``pretrain.nproc_per_node``); returns the committed set's URI."""
    ctx = make_context(config_json, run_id)
    lm = ctx.cfg.language_model
    result = run_training(ctx, STAGE, lm.pretrain, train_lm_pretrain, data_uri=data_uri)
    summary = result.summary
    if metrics is not None:
        for name in ("val_perplexity", "test_perplexity", "tokens_per_s", "mfu"):
            if summary.get(name) is not None:
                metrics.log_metric(name, round(float(summary[name]), 6))
    mfu = f"{summary['mfu']:.1%}" if summary.get("mfu") is not None else "n/a"
    speed = f"{summary['tokens_per_s']:,.0f}" if summary.get("tokens_per_s") else "n/a"
    print(
        f"[lm_pretrain] {summary['kind']} LM, {summary['num_params']:,} parameters: validation "
        f"perplexity {summary['val_perplexity']:.2f}, test {summary['test_perplexity']:.2f}; "
        f"{speed} tokens/s, MFU {mfu}",
        flush=True,
    )
    return result.uri


def train_lm_pretrain(config_json: str, run_id: str, data_uri: str) -> None:
    """Train on every rank (DDP or FSDP2); rank 0 commits."""
    ctx = make_context(config_json, run_id)
    lm = ctx.cfg.language_model
    # The tokenizer lm_data trained (or copied from the user's tokenizer_uri) and the corpus
    # it tokenized and packed with it: every rank reads them, checksums checked, and nothing
    # is tokenized again here.
    data = ctx.open(data_uri)
    packed = PackedText(tokenizer_in(data), packed_splits(data))
    world, _ = setup_world(lm.pretrain)
    result = pretrain_language_model(
        lm.text,
        lm.model,
        lm.pretrain,
        world=world,
        checkpoints=checkpoint_store(ctx, STAGE, lm.pretrain),
        stage=STAGE,
        endpoint_url=ctx.cfg.storage.endpoint_url,
        packed=packed,
    )
    if not world.is_main:
        return
    report = result.report()
    throughput = report["throughput"]
    summary = {
        "kind": lm.model.kind,
        "num_params": result.num_params,
        "val_perplexity": result.val_perplexity,
        "test_perplexity": result.test_perplexity,
        "tokens_per_epoch": result.tokens_per_epoch,
        "tokens_per_s": throughput.get("tokens_per_s"),
        "mfu": throughput.get("mfu"),
        "epochs": len(result.result.history),
        "processes": world.size,
        "parallelism": lm.pretrain.parallelism if world.distributed else "none",
    }
    writer = ctx.writer(STAGE, inputs={"data": data_uri})
    writer.put_bytes(
        "lm.pt", to_bytes({"config": lm.model.model_dump(), "state": result.model.state_dict()})
    )
    writer.put_text(TOKENIZER, result.tokenizer.to_str())
    writer.put_json("report.json", report)
    writer.put_json(
        "history.json", {"history": report["history"], "metric_name": result.result.metric_name}
    )
    title = f"{lm.model.kind} LM ({result.tokens_per_epoch:,} tokens/epoch)"
    writer.put_bytes(
        "curves.png", learning_curves_png(report["history"], title, result.result.metric_name)
    )
    writer.commit(summary=summary)
