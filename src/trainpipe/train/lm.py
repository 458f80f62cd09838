"""Language-model pretraining and text-classifier fine-tuning through the one Trainer.

    lm = pretrain_language_model(TextDataConfig(...), LMConfig(...), LMPretrainConfig(...))
    lm.val_perplexity, lm.throughput, lm.samples
    clf = finetune_text_classifier(lm.model, lm.tokenizer, labelled_text_cfg, TextFinetuneConfig())
    clf.model   # LoRA already merged: a plain TextClassifier ready for ONNX export

The corpus, tokenizer and packing come from :mod:`trainpipe.data.text`, the models from
:mod:`trainpipe.models.lm`, the objectives from :mod:`trainpipe.train.lm_objectives`; the
Trainer does the rest (schedule, clipping, precision, DDP/FSDP, checkpoints and exact resume).
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field, model_validator

from trainpipe.data.datasets import Split
from trainpipe.data.text import (
    EOS,
    MASK,
    PAD,
    SPECIAL_TOKENS,
    TextDataConfig,
    classification_splits,
    encode,
    label_arrays,
    pack_corpus,
    read_corpus,
    special_id,
    tokenizer_for,
    tokenizer_from_json,
)
from trainpipe.errors import ConfigError, DataError
from trainpipe.models.lm import LMConfig, TextClassifier, TransformerLM
from trainpipe.models.lora import apply_lora, merge_lora
from trainpipe.train.checkpoint import CheckpointStore
from trainpipe.train.config import FinetuneConfig, OptimConfig
from trainpipe.train.distributed import World, broadcast_object
from trainpipe.train.finetuning import finetune_lr_factor, finetune_param_groups
from trainpipe.train.lm_objectives import CausalLM, MaskedLM
from trainpipe.train.objectives import Classification
from trainpipe.train.optim import decay_groups
from trainpipe.train.throughput import ThroughputMeter, peak_flops
from trainpipe.train.trainer import Trainer, TrainResult, resolve_device


class LMPretrainConfig(OptimConfig):
    mask_ratio: float = Field(0.15, gt=0.0, lt=1.0)
    """Masked LM: share of tokens chosen for prediction."""

    log_every_steps: int = Field(10, ge=1)
    """Log tokens/s and MFU this often (optimizer steps)."""

    loss_readback_every_steps: int = Field(10, ge=1, le=10_000)
    """Read the training loss back from the device every this many steps (one host-device
    sync for all of them), so a GPU queues steps ahead of the host; a non-finite loss stops the
    run up to that many steps late. Keep ``log_every_steps`` a multiple of it."""

    compile: bool = False
    """``torch.compile`` the model (in place, so checkpoints keep plain parameter names)."""

    sample_prompts: tuple[str, ...] = ("The ", "A ")
    """Causal LM: prompts whose sampled continuations go into the report."""

    sample_tokens: int = Field(24, ge=1, le=1024)
    """Causal LM: tokens sampled per prompt."""

    @model_validator(mode="after")
    def _log_on_readback(self) -> LMPretrainConfig:
        # Steps are booked in bursts when their losses are read back: a tokens/s window that
        # ends inside a burst spans no time (a 1000x spike) and the next one twice its steps.
        if self.log_every_steps % self.loss_readback_every_steps:
            raise ValueError(
                f"log_every_steps {self.log_every_steps} is not a multiple of "
                f"loss_readback_every_steps {self.loss_readback_every_steps}; set it to "
                f"{self.loss_readback_every_steps} or a multiple"
            )
        return self


class TextFinetuneConfig(FinetuneConfig):
    batch_size: int = Field(64, ge=1, le=1_000_000)
    """Global batch size per optimizer step (texts: fixed; the automatic batch is for tables)."""

    strategy: Literal["full", "linear_probe", "gradual_unfreeze", "lora"] = "full"
    """``full``, ``linear_probe`` and ``gradual_unfreeze`` as for any classifier; ``lora``
    freezes the pretrained model and trains low-rank adapters on the attention projections
    (plus the head), merged into the weights at the end."""

    lora_rank: int = Field(8, ge=1, le=1024)
    """LoRA: rank of each adapter."""

    lora_alpha: float = Field(16.0, gt=0.0)
    """LoRA: scale numerator (the update is alpha / rank x B A)."""

    lora_targets: tuple[str, ...] | None = None
    """LoRA: names of the linear layers that get adapters; None: the attention query and value
    projections (``q``, ``v`` of the native models; peft's default for the architecture of a
    Hugging Face checkpoint). Native names: q, k, v, o, gate, up, down."""

    compare_with_scratch: bool = False
    """Not used for text models."""


@dataclass(frozen=True)
class PackedText:
    """A pretraining corpus tokenized and packed: the tokenizer and the ``[n, seq_len + 1]``
    windows of each split (:func:`trainpipe.data.text.pack_corpus`)."""

    tokenizer: object
    splits: dict[str, Split]


@dataclass
class PretrainedLM:
    model: TransformerLM
    tokenizer: object
    result: TrainResult
    num_params: int
    flops_per_token: float
    throughput: dict
    val_perplexity: float
    test_perplexity: float
    tokens_per_epoch: int = 0
    samples: list[str] = field(default_factory=list)

    def report(self) -> dict:
        """What the stage report shows: size, curves in tokens, perplexity, throughput."""
        return {
            "kind": self.model.cfg.kind,
            "num_params": self.num_params,
            "flops_per_token": self.flops_per_token,
            "val_perplexity": self.val_perplexity,
            "test_perplexity": self.test_perplexity,
            "throughput": self.throughput,
            "tokens_per_epoch": self.tokens_per_epoch,
            "history": [
                {
                    **vars(r),
                    "tokens": r.epoch * self.tokens_per_epoch,
                    "val_perplexity": _perplexity(r.val_loss),
                }
                for r in self.result.history
            ],
            "samples": self.samples,
        }


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped so a diverged run reports a number, not inf


def _objective(cfg: LMConfig, train: LMPretrainConfig, tokenizer):
    if cfg.kind == "causal":
        return CausalLM()
    specials = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    return MaskedLM(
        train.mask_ratio,
        special_id(tokenizer, MASK),
        tokenizer.get_vocab_size(),
        special_ids=[i for i in specials if i is not None],
    )


def pretrain_language_model(
    text: TextDataConfig,
    model_cfg: LMConfig,
    train: LMPretrainConfig,
    *,
    world: World | None = None,
    checkpoints: CheckpointStore | None = None,
    stage: str = "lm_pretrain",
    endpoint_url: str | None = None,
    packed: PackedText | None = None,
) -> PretrainedLM:
    """Read and tokenize the corpus, pack it, train a causal or masked LM, and measure it
    (``endpoint_url``: the S3 endpoint for s3:// corpora and tokenizers). ``packed``: the
    corpus already tokenized and packed (the DAG's ``lm_data`` step stores it), so nothing is
    read or tokenized here."""
    if text.seq_len > model_cfg.max_seq_len:
        raise ConfigError(
            f"config error: text.seq_len {text.seq_len} exceeds model max_seq_len "
            f"{model_cfg.max_seq_len}; raise max_seq_len or lower seq_len"
        )
    if packed is None:
        corpus = read_corpus(text, endpoint_url=endpoint_url)
        tokenizer = shared_tokenizer(text, corpus, world, endpoint_url)
        splits = pack_corpus(tokenizer, corpus, text.seq_len, source=text.source)
    else:
        tokenizer, splits = packed.tokenizer, packed.splits
        width = {s.x.shape[1] for s in splits.values()}
        if width != {text.seq_len + 1}:
            raise DataError(
                f"data error: the packed sequences are {sorted(width)} tokens wide, not "
                f"text.seq_len + 1 = {text.seq_len + 1}; pack the corpus again with this config"
            )
    torch.manual_seed(train.seed)
    model = TransformerLM(model_cfg, tokenizer.get_vocab_size())
    flops_per_token = model.flops_per_token(text.seq_len)
    if train.compile:
        compile_with_fallback(model, torch.as_tensor(splits["train"].x[:2, :-1]), stage)
    objective = _objective(model_cfg, train, tokenizer)
    meter = ThroughputMeter(
        tokens_per_step=train.batch_size * text.seq_len,
        flops_per_token=flops_per_token,
        peak_flops_per_s=peak_flops(resolve_device(train.device, world)),
        every_steps=train.log_every_steps,
        stage=stage,
    )
    trainer = Trainer(
        train,
        model,
        objective,
        stage=stage,
        world=world,
        checkpoints=checkpoints,
        on_step_end=meter.step,
    )
    result = trainer.fit(splits["train"], splits["validation"])
    val_loss, _ = trainer.evaluate(splits["validation"])
    test_loss, _ = trainer.evaluate(splits["test"])
    model = trainer.plain_model()  # whole weights on every rank, also after FSDP
    samples = []
    if model_cfg.kind == "causal" and (world is None or world.is_main):
        samples = sample_texts(model, tokenizer, train.sample_prompts, train.sample_tokens)
    return PretrainedLM(
        model=model,
        tokenizer=tokenizer,
        result=result,
        num_params=model.num_params(),
        flops_per_token=flops_per_token,
        throughput={**meter.summary(), "records": meter.records},
        val_perplexity=_perplexity(val_loss),
        test_perplexity=_perplexity(test_loss),
        tokens_per_epoch=len(splits["train"]) * text.seq_len,
        samples=samples,
    )


def shared_tokenizer(
    text: TextDataConfig, corpus, world: World | None, endpoint_url: str | None = None
):
    """The configured tokenizer, trained once on rank 0 and sent to the other ranks (so every
    rank tokenizes with exactly the same vocabulary)."""
    if world is None or not world.distributed:
        return tokenizer_for(text, corpus, endpoint_url=endpoint_url)
    serialized = None
    if world.is_main:
        serialized = tokenizer_for(text, corpus, endpoint_url=endpoint_url).to_str()
    return tokenizer_from_json(broadcast_object(serialized, world), origin="rank 0's tokenizer")


def compile_with_fallback(model: torch.nn.Module, example: torch.Tensor, stage: str) -> bool:
    """``model.compile()`` (in place: parameter names stay plain) when a probe forward of a
    compiled copy succeeds; otherwise one line on stderr and the model stays eager (no C++
    toolchain for inductor, an op the compiler cannot handle)."""
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            torch.compile(model)(example.to(device))
    except Exception as exc:  # the compiler stack raises many unrelated types
        print(
            f"[{stage}] torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
            "training eagerly",
            file=sys.stderr,
            flush=True,
        )
        return False
    model.compile()
    return True


def sample_texts(model: TransformerLM, tokenizer, prompts: list[str], tokens: int) -> list[str]:
    device = next(model.parameters()).device
    out = []
    for i, prompt in enumerate(prompts):
        ids = encode(tokenizer, [prompt])[0] or [special_id(tokenizer, EOS)]
        generated = model.generate(
            torch.tensor([ids], device=device), tokens, temperature=0.8, seed=i
        )
        out.append(tokenizer.decode(generated[0].tolist()))
    return out


@dataclass
class TextClassifierResult:
    model: TextClassifier
    label_names: list[str]
    result: TrainResult
    test_accuracy: float
    trainable_params: int
    splits: dict[str, Split]


def finetune_text_classifier(
    backbone: TransformerLM,
    tokenizer,
    text: TextDataConfig,
    cfg: TextFinetuneConfig,
    *,
    world: World | None = None,
    checkpoints: CheckpointStore | None = None,
    stage: str = "lm_finetune",
    endpoint_url: str | None = None,
) -> TextClassifierResult:
    """Fine-tune a copy of ``backbone`` as a classifier over ``text``'s labelled corpus with
    the chosen strategy (``backbone`` itself stays the pretrained model); a LoRA model comes
    back merged (plain linear layers)."""
    corpus = read_corpus(text, endpoint_url=endpoint_url)
    splits, names = classification_splits(tokenizer, corpus, text.seq_len)
    torch.manual_seed(cfg.seed)
    model = TextClassifier(copy.deepcopy(backbone), len(names), special_id(tokenizer, PAD))
    if cfg.strategy == "lora":
        apply_lora(
            model.encoder,
            rank=cfg.lora_rank,
            alpha=cfg.lora_alpha,
            targets=tuple(cfg.lora_targets or ("q", "v")),
        )
        groups = decay_groups(model.parameters(), cfg.weight_decay, lr_scale=1.0, depth=0)
    else:
        groups = finetune_param_groups(model, cfg)
    trainable = {id(p) for g in groups for p in g["params"]}
    for p in model.parameters():  # what no group holds is frozen (linear probe, LoRA base)
        p.requires_grad_(id(p) in trainable)
    trainer = Trainer(
        cfg,
        model,
        Classification(cfg.label_smoothing),
        stage=stage,
        world=world,
        checkpoints=checkpoints,
        param_groups=groups,
        lr_factor=finetune_lr_factor(cfg),
    )
    return _fit_and_test(trainer, splits, names, merge_lora if cfg.strategy == "lora" else None)


def _fit_and_test(trainer: Trainer, splits: dict[str, Split], names: list[str], merge):
    """Train, count what trained, merge adapters (``merge(model)``), score the test split."""
    result = trainer.fit(splits["train"], splits["validation"])
    model = trainer.plain_model()
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if merge is not None:
        merge(model)
    model = model.eval().cpu()
    with torch.inference_mode():
        logits = model(torch.as_tensor(splits["test"].x))
    accuracy = float((logits.argmax(1).numpy() == splits["test"].y).mean())
    return TextClassifierResult(model, names, result, accuracy, trainable_params, splits)


def finetune_hf_classifier(
    checkpoint_uri: str,
    text: TextDataConfig,
    cfg: TextFinetuneConfig,
    *,
    world: World | None = None,
    checkpoints: CheckpointStore | None = None,
    stage: str = "hf_finetune",
    endpoint_url: str | None = None,
) -> tuple[TextClassifierResult, object]:
    """Fine-tune a user's Hugging Face checkpoint (file:// or s3://) as a classifier over
    ``text``'s labelled corpus: ``full``, ``linear_probe`` (head only) or ``lora`` (peft,
    merged at the end). Returns the result and the checkpoint's fast tokenizer."""
    from trainpipe.models.hf import apply_peft_lora, load_hf_classifier, merge_peft_lora

    if cfg.strategy not in ("full", "linear_probe", "lora") or cfg.layer_lr_decay != 1.0:
        raise ConfigError(
            f"config error: finetune.strategy={cfg.strategy!r} (layer_lr_decay "
            f"{cfg.layer_lr_decay}) is not available for Hugging Face checkpoints; use full, "
            "linear_probe or lora with layer_lr_decay 1.0"
        )
    corpus = read_corpus(text, endpoint_url=endpoint_url)
    labels, names = label_arrays(corpus)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_hf_classifier(checkpoint_uri, len(names), endpoint_url=endpoint_url)
    splits = {}
    for split, y in labels.items():
        ids = tokenizer(
            getattr(corpus, split),
            truncation=True,
            max_length=text.seq_len,
            padding="max_length",
            return_tensors="np",
        )["input_ids"]
        splits[split] = Split(ids.astype("int64"), y)
    if cfg.strategy == "lora":
        apply_peft_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)
    elif cfg.strategy == "linear_probe":
        head = ("classifier", "score")
        for name, p in model.named_parameters():
            p.requires_grad_(any(part in name.split(".") for part in head))
    trainer = Trainer(
        cfg,
        model,
        Classification(cfg.label_smoothing),
        stage=stage,
        world=world,
        checkpoints=checkpoints,
    )
    merge = merge_peft_lora if cfg.strategy == "lora" else None
    return _fit_and_test(trainer, splits, names, merge), tokenizer
