"""Optimizers by name, with parameter groups that know what not to decay.

Weight decay applies to matrices and kernels only: shrinking biases and normalization scales
toward zero hurts and regularizes nothing. Groups may carry an ``lr_scale`` (layer-wise
learning-rate decay) that the Trainer multiplies into each step's learning rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from trainpipe.train.config import OptimConfig


def decay_groups(parameters: Iterable[nn.Parameter], weight_decay: float, **extra) -> list[dict]:
    params = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **extra},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **extra},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, groups: list[dict] | None = None
) -> torch.optim.Optimizer:
    """``groups`` defaults to decay/no-decay groups over every trainable parameter."""
    if groups is None:
        groups = getattr(model, "param_groups_for_optimizer", None)
        groups = groups(cfg) if groups else decay_groups(model.parameters(), cfg.weight_decay)
    name = cfg.optimizer
    # The fused CUDA kernel updates all parameters in one launch; CPU keeps the default.
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    if name == "adam":
        # Adam's weight_decay is L2 added to the gradient (coupled), the classic behaviour.
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    momentum = 0.0 if name == "sgd" else cfg.momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, nesterov=name == "sgd_nesterov")
