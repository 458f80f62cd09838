"""Low-rank adaptation (LoRA, Hu et al. 2021) for the native transformer models.

    apply_lora(model, rank=8, alpha=16, targets=("q", "v"))   # base weights frozen
    ...train: only lora_a / lora_b (and whatever the caller unfreezes, e.g. a head) learn...
    merge_lora(model)                                         # plain nn.Linear again, for export

Each targeted ``nn.Linear`` W becomes W + (alpha / rank) * B @ A with A ``[rank, in]`` random
and B ``[out, rank]`` zero, so the adapted model starts exactly where the pretrained one is.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        """The equivalent plain linear layer (W + scale * B @ A)."""
        layer = nn.Linear(
            self.base.in_features, self.base.out_features, bias=self.base.bias is not None
        )
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer.to(self.base.weight.device)


def apply_lora(model: nn.Module, *, rank: int, alpha: float, targets: tuple[str, ...]) -> list[str]:
    """Freeze every parameter of ``model`` and wrap the linear layers whose attribute name is
    in ``targets`` with adapters; returns the wrapped layers' qualified names."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{parent_name}.{name}" if parent_name else name)
    if not wrapped:
        raise ValueError(f"no linear layer named any of {list(targets)} in the model")
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its merged plain linear layer (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return model
