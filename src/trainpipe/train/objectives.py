"""Training objectives: what a batch's loss is, and how validation is scored.

Each objective turns a batch ``(x, y)`` into a scalar loss; ``y`` is ignored by the
self-supervised ones, which is what makes them usable without labels.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F


class Objective(Protocol):
    name: str
    metric_name: str
    """Validation metric reported besides the loss (higher is better)."""

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, per-batch metric numerator summed over examples)."""
        ...


class MaskedReconstruction:
    """Hide a random share of input features and reconstruct them (MAE-style, on features)."""

    name = "masked_reconstruction"
    metric_name = "neg_masked_mse"

    def __init__(self, mask_ratio: float):
        self.mask_ratio = mask_ratio

    def loss(self, model, x, y, generator):
        mask = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) < self.mask_ratio
        reconstruction = model(x.masked_fill(mask, 0.0))
        squared_error = (reconstruction - x).pow(2) * mask
        masked_count = mask.sum().clamp_min(1)
        loss = squared_error.sum() / masked_count
        # Metric numerator: each example's negative masked MSE, summed over the batch.
        per_example = squared_error.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        return loss, -per_example.sum()


class Classification:
    """Cross-entropy with optional label smoothing; accuracy as the metric."""

    name = "classification"
    metric_name = "accuracy"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, model, x, y, generator):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        correct = (logits.argmax(dim=1) == y).sum()
        return loss, correct
