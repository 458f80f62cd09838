"""The language-model workflow in one command: pretrain a causal or masked LM on a text corpus,
fine-tune it as a text classifier, export the classifier with its tokenizer as a model package
the server takes text for.

    python -m trainpipe.stages.language_model [--config lm.yaml] [--set pretrain.epochs=2 ...]

Defaults are the CPU demo (a few minutes on 2 cores): a small causal LM pretrained on the
standard library's pydoc help texts, fine-tuned with LoRA on generated product reviews. It
writes, under ``<storage.uri>/runs/<run_id>/``:

- ``language_model/``: ``report.json`` (size, FLOPs per token, learning curves with tokens
  seen, validation/test perplexity, tokens/s and MFU, generated samples), ``curves.png``,
  ``lm.pt`` (weights), ``tokenizer.json``;
- ``classifier/``: the model package (``model.onnx``, ``model.json``, ``tokenizer.json``),
  servable with ``trainpipe serve <that URI>``; its parity and test accuracy are in the report.

Under ``torchrun --nproc_per_node=N -m trainpipe.stages.language_model ...`` every rank trains
(DDP, or FSDP2 with ``pretrain.parallelism=fsdp`` / ``finetune.parallelism=fsdp``; the
tokenizer is trained on rank 0 and broadcast; sharded weights are gathered whole after each
fit) and rank 0 exports and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from pydantic import Field, ValidationError

from trainpipe.artifacts import ArtifactWriter
from trainpipe.config import StorageConfig
from trainpipe.errors import ConfigError
from trainpipe.evaluate.plots import learning_curves_png
from trainpipe.export.text import export_text_package
from trainpipe.models.checkpoint import to_bytes
from trainpipe.models.hf import served_tokenizer
from trainpipe.stages.entry import stage_entry
from trainpipe.storage import open_store
from trainpipe.train.distributed import World, init_from_env, shutdown
from trainpipe.train.lm import (
    finetune_hf_classifier,
    finetune_text_classifier,
    pretrain_language_model,
)
from trainpipe.train.lm_config import LanguageModelSettings


class LanguageModelRunConfig(LanguageModelSettings):
    storage: StorageConfig = StorageConfig()
    """Where the run's artifacts go (``uri``: a path, file:// or s3://) and the S3
    ``endpoint_url`` used for every s3:// read and write of the run (corpus, tokenizer,
    Hugging Face checkpoint, artifacts)."""

    model_name: str = Field("text-classifier", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    """Name the classifier is served under."""


def load_run_config(path: str | None, overrides: list[str]) -> LanguageModelRunConfig:
    from trainpipe.config import _apply_override, _format_error

    # Start from the defaults so a file or --set that names one key of a section keeps the
    # section's other (demo) defaults.
    raw: dict = LanguageModelRunConfig().model_dump(mode="json")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config error: cannot read {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config error: {path} must hold a mapping of sections")
        _merge(raw, loaded)
    for assignment in overrides:
        _apply_override(raw, assignment)
    try:
        return LanguageModelRunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, LanguageModelRunConfig)) from None


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _classifier_report(cfg, clf, parity: list[dict], package_uri: str) -> dict:
    return {
        "source": cfg.hf_checkpoint_uri or "pretrained here",
        "strategy": cfg.finetune.strategy,
        "labels": clf.label_names,
        "trainable_params": clf.trainable_params,
        "test_accuracy": clf.test_accuracy,
        "history": [vars(r) for r in clf.result.history],
        "onnx_parity": parity,
        "package_uri": package_uri,
    }


def run_language_model(
    cfg: LanguageModelRunConfig, run_id: str, world: World | None = None
) -> dict | None:
    """Pretrain (or load a Hugging Face checkpoint), fine-tune, export; returns the report
    (also written to the store). Under torchrun every rank trains (DDP/FSDP) and rank 0 exports and
    writes; the other ranks return None."""
    world = world or World()
    endpoint = cfg.storage.endpoint_url
    store = open_store(cfg.storage.uri, endpoint_url=endpoint)
    started = time.monotonic()
    lm = None
    if cfg.hf_checkpoint_uri:
        clf, hf_tokenizer = finetune_hf_classifier(
            cfg.hf_checkpoint_uri,
            cfg.classifier_text,
            cfg.finetune,
            world=world,
            endpoint_url=endpoint,
        )
        tokenizer, max_seq_len = served_tokenizer(hf_tokenizer), cfg.classifier_text.seq_len
        # The tokenizer's post-processor adds the model's own special tokens: no cls_id.
        special = {"pad_id": hf_tokenizer.pad_token_id, "cls_id": None}
    else:
        lm = pretrain_language_model(
            cfg.text, cfg.model, cfg.pretrain, world=world, endpoint_url=endpoint
        )
        classifier_text = cfg.classifier_text.model_copy(
            update={"seq_len": min(cfg.classifier_text.seq_len, cfg.model.max_seq_len)}
        )
        clf = finetune_text_classifier(
            lm.model,
            lm.tokenizer,
            classifier_text,
            cfg.finetune,
            world=world,
            endpoint_url=endpoint,
        )
        tokenizer, max_seq_len, special = lm.tokenizer, cfg.model.max_seq_len, {}
    if not world.is_main:
        return None
    package_uri, parity = export_text_package(
        clf.model,
        tokenizer,
        store,
        f"runs/{run_id}/classifier",
        name=cfg.model_name,
        version=run_id,
        labels=clf.label_names,
        max_seq_len=max_seq_len,
        check_ids=clf.splits["test"].x,
        **special,
    )
    report = {
        "language_model": lm.report() if lm else None,
        "classifier": _classifier_report(cfg, clf, parity, package_uri),
        "wall_s": time.monotonic() - started,
    }
    writer = ArtifactWriter(store, f"runs/{run_id}/language_model", stage="lm", run_id=run_id)
    writer.put_json("report.json", report)
    summary = {"test_accuracy": clf.test_accuracy}
    if lm is not None:
        payload = {"config": cfg.model.model_dump(), "state": lm.model.state_dict()}
        writer.put_bytes("lm.pt", to_bytes(payload))
        writer.put_text("tokenizer.json", lm.tokenizer.to_str())
        history = report["language_model"]["history"]
        title = f"{cfg.model.kind} LM ({lm.tokens_per_epoch:,} tokens/epoch)"
        writer.put_bytes("curves.png", learning_curves_png(history, title, lm.result.metric_name))
        summary["val_perplexity"] = lm.val_perplexity
    report["report_uri"] = writer.commit(summary=summary)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainpipe.stages.language_model",
        description="Pretrain a language model, fine-tune a text classifier, export it.",
    )
    parser.add_argument("--config", help="YAML file with the sections of LanguageModelRunConfig")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-id", default=time.strftime("lm-%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    try:
        cfg = load_run_config(args.config, args.set)
    except ConfigError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return 2
    on_gpu = cfg.pretrain.device != "cpu" and torch.cuda.is_available()
    world = init_from_env(torch.device("cuda" if on_gpu else "cpu"))  # NCCL on GPU, else gloo
    try:
        report = stage_entry(run_language_model)(cfg, args.run_id, world)
    finally:
        shutdown()
    if report is None:  # a rank other than 0: rank 0 reports
        return 0
    lm, clf = report["language_model"], report["classifier"]
    summary = {}
    if lm is not None:
        summary = {
            "val_perplexity": round(lm["val_perplexity"], 2),
            "test_perplexity": round(lm["test_perplexity"], 2),
            "tokens_per_s": lm["throughput"]["tokens_per_s"],
            "mfu": lm["throughput"]["mfu"],
            "samples": lm["samples"],
        }
    summary |= {
        "classifier_test_accuracy": round(clf["test_accuracy"], 4),
        "package_uri": clf["package_uri"],
        "report_uri": report["report_uri"],
        "wall_s": round(report["wall_s"], 1),
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
