"""Self-supervised pretraining setups: the model wrapper and objective for each name."""

from __future__ import annotations

from torch import nn

from trainpipe.errors import ConfigError
from trainpipe.models.heads import ContrastiveProjector, MaskedReconstructor, RotationPredictor
from trainpipe.train.config import PretrainConfig
from trainpipe.train.finetuning import resolve_batch_size
from trainpipe.train.objectives import (
    Contrastive,
    MaskedReconstruction,
    Objective,
    RotationPrediction,
)

PRETRAIN_BATCH_MAX = 256
"""The automatic pretraining batch's upper bound for tables, and the batch for images (the
fixed default before it scaled with rows: large tables and the digits demo train as before)."""


def resolve_pretrain_batch(cfg: PretrainConfig, examples: int, table: bool) -> PretrainConfig:
    """``cfg`` with its batch size set: the configured one, or for tables ``examples // 16``
    clamped to 16..256 (16 optimizer steps per epoch on a small table, not one), 256 for
    images."""
    return resolve_batch_size(
        cfg, examples, table, largest=PRETRAIN_BATCH_MAX, image_size=PRETRAIN_BATCH_MAX
    )


def pretraining_setup(
    cfg: PretrainConfig, encoder: nn.Module, input_shape: list[int], hidden_dim: int
) -> tuple[nn.Module, Objective]:
    objective = cfg.objective
    if objective == "auto":
        objective = "contrastive" if len(input_shape) == 3 else "masked_reconstruction"
    if objective == "masked_reconstruction":
        model = MaskedReconstructor(encoder, input_shape, hidden_dim)
        return model, MaskedReconstruction(cfg.mask_ratio)
    if objective == "rotation":
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ConfigError(
                f"config error: pretrain.objective='rotation' needs square images, but the data "
                f"has shape {input_shape}; use masked_reconstruction or contrastive"
            )
        return RotationPredictor(encoder), RotationPrediction()
    return ContrastiveProjector(encoder), Contrastive(cfg.temperature)
