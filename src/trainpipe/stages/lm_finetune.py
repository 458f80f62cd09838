"""lm_finetune: fine-tune a text classifier on the labelled corpus, from the model lm_pretrain
trained (``full``, ``linear_probe``, ``gradual_unfreeze``, ``lora``) or from a Hugging Face
checkpoint (``language_model.hf_checkpoint_uri``: ``full``, ``linear_probe``, ``lora`` via peft).
LoRA adapters are merged before anything is stored.

Writes ``runs/<run_id>/lm_finetune/``: ``model.pt`` (:mod:`trainpipe.models.text_checkpoint`),
``tokenizer.json``, ``text.json`` (pad/cls ids, longest sequence, labels), ``test_ids.npy``
(the test split as the classifier saw it: evaluate and export score exactly these) and
``history.json``. With ``finetune.nproc_per_node`` > 1 (``auto``: every GPU of the pod) it
trains under torchrun in its pod (``stages/pod.py``), DDP or FSDP2 (``finetune.parallelism``;
the sharded weights are gathered whole after training); rank 0 stores.
"""

from __future__ import annotations

from trainpipe.data.text import CLS, PAD, special_id
from trainpipe.errors import DataError
from trainpipe.models.checkpoint import from_bytes, to_bytes
from trainpipe.models.hf import served_tokenizer
from trainpipe.models.lm import LMConfig, TransformerLM
from trainpipe.models.text_checkpoint import text_classifier_payload
from trainpipe.stages.context import make_context
from trainpipe.stages.lm_context import (
    TEST_IDS,
    TOKENIZER,
    array_bytes,
    labelled_text,
    tokenizer_in,
)
from trainpipe.stages.training_run import checkpoint_store, run_training, setup_world
from trainpipe.train.lm import finetune_hf_classifier, finetune_text_classifier

STAGE = "lm_finetune"


def _pretrained(ctx, pretrain_uri: str):
    """The LM and tokenizer lm_pretrain stored."""
    pretrained = ctx.open(pretrain_uri)
    payload = from_bytes(pretrained.get_bytes("lm.pt"))
    tokenizer = tokenizer_in(pretrained)
    model = TransformerLM(LMConfig(**payload["config"]), tokenizer.get_vocab_size())
    model.load_state_dict(payload["state"])
    return model, tokenizer


def run_lm_finetune(
    config_json: str, run_id: str, data_uri: str, pretrain_uri: str, metrics=None
) -> str:
    """Fine-tune in this process, or under torchrun with one process per GPU of the pod
    (``finetune.nproc_per_node``); returns the committed set's URI."""
    ctx = make_context(config_json, run_id)
    lm = ctx.cfg.language_model
    inputs = {"data_uri": data_uri, "pretrain_uri": pretrain_uri}
    result = run_training(ctx, STAGE, lm.finetune, train_lm_finetune, **inputs)
    summary = result.summary
    if metrics is not None:
        metrics.log_metric("val_accuracy", round(float(summary["final_val_accuracy"]), 6))
        metrics.log_metric("trainable_params", summary["trainable_params"])
    print(
        f"[lm_finetune] {summary['strategy']} from {summary['source']}: "
        f"{summary['trainable_params']:,} trainable parameters, validation accuracy "
        f"{summary['final_val_accuracy']:.4f} after {summary['epochs']} epochs",
        flush=True,
    )
    return result.uri


def train_lm_finetune(config_json: str, run_id: str, data_uri: str, pretrain_uri: str) -> None:
    """Train on every rank (DDP or FSDP2); rank 0 commits."""
    ctx = make_context(config_json, run_id)
    lm = ctx.cfg.language_model
    endpoint = ctx.cfg.storage.endpoint_url
    stored = labelled_text(ctx.open(data_uri))
    text = lm.classifier_text.model_copy(update={"seq_len": lm.classifier_seq_len()})
    world, _ = setup_world(lm.finetune)
    training = {
        "world": world,
        "checkpoints": checkpoint_store(ctx, STAGE, lm.finetune),
        "stage": STAGE,
        "endpoint_url": endpoint,
    }
    if lm.hf_checkpoint_uri:
        clf, hf_tokenizer = finetune_hf_classifier(
            lm.hf_checkpoint_uri, text, lm.finetune, **training
        )
        tokenizer = served_tokenizer(hf_tokenizer)
        # The tokenizer's post-processor adds the model's own special tokens: no cls_id.
        spec = {
            "pad_id": hf_tokenizer.pad_token_id,
            "cls_id": None,
            "max_seq_len": text.seq_len,
        }
    else:
        backbone, tokenizer = _pretrained(ctx, pretrain_uri)
        clf = finetune_text_classifier(backbone, tokenizer, text, lm.finetune, **training)
        spec = {
            "pad_id": special_id(tokenizer, PAD),
            "cls_id": tokenizer.token_to_id(CLS),
            "max_seq_len": lm.model.max_seq_len,
        }
    if not world.is_main:
        return
    test = clf.splits["test"]
    if clf.label_names != stored.label_names or len(test) != len(stored.texts["test"]):
        raise DataError(
            f"data error: {lm.classifier_text.source} changed since lm_data read it (labels "
            f"{clf.label_names} vs {stored.label_names}, {len(test)} vs "
            f"{len(stored.texts['test'])} test documents); rerun the pipeline"
        )
    history = {
        "history": [vars(r) for r in clf.result.history],
        "metric_name": clf.result.metric_name,
        "steps": clf.result.steps,
    }
    writer = ctx.writer(
        STAGE, inputs={"data": data_uri} | ({"pretrain": pretrain_uri} if pretrain_uri else {})
    )
    writer.put_bytes("model.pt", to_bytes(text_classifier_payload(clf.model, clf.label_names)))
    writer.put_text(TOKENIZER, tokenizer.to_str())
    writer.put_json("text.json", spec | {"labels": clf.label_names})
    writer.put_bytes(TEST_IDS, array_bytes(test.x))
    writer.put_json("history.json", history)
    last = clf.result.history[-1]
    summary = {
        "source": lm.hf_checkpoint_uri or "pretrained here",
        "strategy": lm.finetune.strategy,
        "trainable_params": clf.trainable_params,
        "labelled_examples": len(clf.splits["train"]),
        "epochs": len(clf.result.history),
        "final_val_loss": last.val_loss,
        "final_val_accuracy": last.val_metric,
        "torch_test_accuracy": clf.test_accuracy,
        "processes": world.size,
        "parallelism": lm.finetune.parallelism if world.distributed else "none",
    }
    writer.commit(summary=summary)
