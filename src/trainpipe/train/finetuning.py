"""Fine-tuning strategies as learning-rate rules over the encoder's blocks.

Parameter groups are numbered by depth below the head (head = 0, the encoder's top block = 1,
...). Layer-wise learning-rate decay gives depth d the factor ``layer_lr_decay ** d``; gradual
unfreezing gives a block a zero learning rate until its turn, one more block every
``unfreeze_every_epochs`` from the top down. Freezing by learning rate (rather than
``requires_grad``) keeps the set of trainable parameters fixed, which DDP requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch

from trainpipe.data.config import BUILTIN_DIGITS
from trainpipe.models import Classifier
from trainpipe.train.checkpoint import CheckpointStore
from trainpipe.train.config import FinetuneConfig, OptimConfig
from trainpipe.train.distributed import World
from trainpipe.train.objectives import Classification, Objective
from trainpipe.train.optim import decay_groups
from trainpipe.train.trainer import EpochRecord, Trainer

OptimConfigT = TypeVar("OptimConfigT", bound=OptimConfig)


def finetune_param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict]:
    groups = decay_groups(model.head.parameters(), cfg.weight_decay, lr_scale=1.0, depth=0)
    if cfg.strategy == "linear_probe":
        return groups
    blocks = list(reversed(model.encoder.blocks()))
    seen: set[int] = set()
    for depth, block in enumerate(blocks, start=1):
        params = [p for p in block.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        groups += decay_groups(
            params, cfg.weight_decay, lr_scale=cfg.layer_lr_decay**depth, depth=depth
        )
    # Parameters outside every block (a ViT's position embeddings) sit with the lowest block.
    rest = [p for p in model.encoder.parameters() if id(p) not in seen]
    deepest = len(blocks)
    groups += decay_groups(
        rest, cfg.weight_decay, lr_scale=cfg.layer_lr_decay**deepest, depth=deepest
    )
    return groups


def finetune_lr_factor(cfg: FinetuneConfig) -> Callable[[dict, int], float]:
    def factor(group: dict, epoch: int) -> float:
        if cfg.strategy == "gradual_unfreeze":
            unfrozen_blocks = (epoch - 1) // cfg.unfreeze_every_epochs
            if group["depth"] > unfrozen_blocks:
                return 0.0
        return group["lr_scale"]

    return factor


def classifier_trainer(
    cfg: FinetuneConfig,
    model: Classifier,
    *,
    stage: str,
    world: World | None = None,
    teacher: torch.nn.Module | None = None,
    checkpoints: CheckpointStore | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    objective: Objective | None = None,
) -> Trainer:
    """The fine-tuning Trainer: strategy, distillation and layer-wise rates from ``cfg``; the
    finetune stage and the tune stage's trials both train through it. ``objective`` replaces the
    classification objective (regression, class weights)."""
    if cfg.strategy == "linear_probe":
        model.encoder.requires_grad_(False)
    objective = objective or Classification(
        cfg.label_smoothing,
        teacher=teacher,
        distill_weight=cfg.distill_weight,
        distill_temperature=cfg.distill_temperature,
        augment=cfg.augment,
    )
    trainer = Trainer(
        cfg,
        model,
        objective,
        stage=stage,
        world=world,
        checkpoints=checkpoints,
        param_groups=finetune_param_groups(model, cfg),
        lr_factor=finetune_lr_factor(cfg),
        on_epoch_end=on_epoch_end,
    )
    if teacher is not None:
        teacher.to(trainer.device)
    return trainer


DIGITS_DEMO_LABEL_FRACTION = 0.2


def resolve_label_fraction(cfg: FinetuneConfig, source: str) -> float:
    """All labels of a user's data; the digits demo keeps its 20%-label showcase."""
    if cfg.label_fraction is not None:
        return cfg.label_fraction
    return DIGITS_DEMO_LABEL_FRACTION if source == BUILTIN_DIGITS else 1.0


AUTO_ENSEMBLE_SIZE = 5


def resolve_ensemble_size(cfg: FinetuneConfig, labelled_rows: int, table: bool) -> int:
    if cfg.ensemble_size is not None:
        return cfg.ensemble_size
    return AUTO_ENSEMBLE_SIZE if table and labelled_rows <= cfg.ensemble_max_rows else 1


AUTO_BATCH_STEPS_PER_EPOCH = 16
"""An automatic table batch aims at this many optimizer steps per epoch."""
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 16, 64
"""Bounds of the automatic table batch: below 16 the gradient is mostly noise; 64 (the former
fixed default) keeps a large table's epochs as fast as before."""
IMAGE_BATCH_SIZE = 64
"""The automatic batch for images (the digits demo's 20%-label comparison is tuned on it)."""
MAX_AUTO_EPOCHS = 1000


def auto_batch_size(
    examples: int,
    table: bool,
    grad_accumulation_steps: int = 1,
    *,
    largest: int = AUTO_BATCH_MAX,
    image_size: int = IMAGE_BATCH_SIZE,
) -> int:
    """``examples // 16`` clamped to 16..``largest`` for tables, ``image_size`` for images;
    rounded down to a multiple of ``grad_accumulation_steps``."""
    size = image_size
    if table:
        size = min(largest, max(AUTO_BATCH_MIN, examples // AUTO_BATCH_STEPS_PER_EPOCH))
    return max(grad_accumulation_steps, size - size % grad_accumulation_steps)


def resolve_batch_size(
    cfg: OptimConfigT,
    examples: int,
    table: bool,
    *,
    largest: int = AUTO_BATCH_MAX,
    image_size: int = IMAGE_BATCH_SIZE,
) -> OptimConfigT:
    """``cfg`` (fine-tuning's, or pretraining's with its own bounds) with its batch size set:
    the configured one, or ``auto_batch_size`` with ``largest`` and ``image_size``."""
    if cfg.batch_size is not None:
        return cfg
    size = auto_batch_size(
        examples, table, cfg.grad_accumulation_steps, largest=largest, image_size=image_size
    )
    return cfg.model_copy(update={"batch_size": size})


def resolve_schedule(cfg: FinetuneConfig, examples: int, table: bool) -> FinetuneConfig:
    """The schedule a fine-tuning run of ``examples`` labelled rows trains with: the batch size
    (``resolve_batch_size``), then for tables enough epochs for ``min_steps`` optimizer steps and
    an early-stopping patience of at least ``patience_min_steps`` steps. Images keep ``epochs``
    and ``early_stopping_patience`` (the digits demo's comparison is tuned on them)."""
    cfg = resolve_batch_size(cfg, examples, table)
    if not table:
        return cfg
    steps_per_epoch = max(1, math.ceil(examples / cfg.batch_size))
    epochs = min(MAX_AUTO_EPOCHS, max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch)))
    update: dict = {"epochs": epochs}
    if cfg.early_stopping_patience is not None:
        update["early_stopping_patience"] = max(
            cfg.early_stopping_patience, math.ceil(cfg.patience_min_steps / steps_per_epoch)
        )
    return cfg.model_copy(update=update)
