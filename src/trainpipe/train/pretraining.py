"""Self-supervised pretraining setups: the model wrapper and objective for each name."""

from __future__ import annotations

from torch import nn

from trainpipe.errors import ConfigError
from trainpipe.models.heads import ContrastiveProjector, MaskedReconstructor, RotationPredictor
from trainpipe.train.config import PretrainConfig
from trainpipe.train.objectives import (
    Contrastive,
    MaskedReconstruction,
    Objective,
    RotationPrediction,
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
