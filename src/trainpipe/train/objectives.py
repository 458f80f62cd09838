"""Training objectives: how a batch becomes a loss, and how validation is scored.

Each objective prepares the model's input from a batch ``(x, y)`` and returns
``(mean loss, metric numerator summed over the batch)``; in training mode the metric is 0.0
and not computed (the Trainer reads it only in validation, and on a GPU each discarded
reduction is kernel launches every step). The self-supervised ones ignore ``y``,
which is what makes them usable without labels. Randomness (masks, rotations, augmentations)
comes from the generator passed in, so a seed reproduces a run.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from trainpipe.train.augment import augment


class Objective(Protocol):
    name: str
    metric_name: str
    """Validation metric reported besides the loss (higher is better)."""

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | float]: ...


class MaskedReconstruction:
    """Hide a random share of input features and reconstruct them (MAE-style, on features)."""

    name = "masked_reconstruction"
    metric_name = "neg_masked_mse"

    def __init__(self, mask_ratio: float):
        self.mask_ratio = mask_ratio

    def loss(self, model, x, y, generator):
        mask = (torch.rand(x.shape, generator=generator) < self.mask_ratio).to(x.device)
        reconstruction = model(x.masked_fill(mask, 0.0))
        squared_error = (reconstruction.float() - x).pow(2) * mask
        loss = squared_error.sum() / mask.sum().clamp_min(1)
        if model.training:
            return loss, 0.0
        per_example = squared_error.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        return loss, -per_example.sum()


class RotationPrediction:
    """Rotate each square image by a random multiple of 90 degrees and predict which."""

    name = "rotation"
    metric_name = "rotation_accuracy"

    def loss(self, model, x, y, generator):
        turns = torch.randint(0, 4, (len(x),), generator=generator).to(x.device)
        rotated = torch.stack(
            [torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(x, turns, strict=True)]
        )
        logits = model(rotated)
        loss = F.cross_entropy(logits.float(), turns)
        return loss, 0.0 if model.training else (logits.argmax(1) == turns).sum()


class Contrastive:
    """SimCLR's NT-Xent: two augmentations of an input attract, all other inputs repel."""

    name = "contrastive"
    metric_name = "pair_accuracy"

    def __init__(self, temperature: float):
        self.temperature = temperature

    def loss(self, model, x, y, generator):
        n = len(x)
        views = torch.cat([augment(x, generator), augment(x, generator)])
        z = model(views).float()
        similarity = z @ z.T / self.temperature
        similarity.fill_diagonal_(float("-inf"))
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(x.device)
        loss = F.cross_entropy(similarity, partner)
        if model.training:
            return loss, 0.0
        found = (similarity.argmax(1) == partner).float()
        return loss, (found[:n] + found[n:]).sum() / 2


class Classification:
    """Cross-entropy with optional label smoothing and knowledge distillation."""

    name = "classification"
    metric_name = "accuracy"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        *,
        teacher: nn.Module | None = None,
        distill_weight: float = 0.5,
        distill_temperature: float = 2.0,
        augment: bool = False,
        class_weights: torch.Tensor | None = None,
    ):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.augment = augment
        self.teacher = teacher.eval() if teacher is not None else None
        self.distill_weight = distill_weight
        self.temperature = distill_temperature

    def loss(self, model, x, y, generator):
        if self.augment and model.training:
            x = augment(x, generator)
        logits = model(x).float()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=self.label_smoothing)
        if self.teacher is not None and model.training:
            with torch.no_grad():
                teacher_logits = self.teacher(x).float()
            t = self.temperature
            # Hinton et al.: KL between softened distributions, scaled by T^2 to keep gradients
            # comparable to the label loss.
            distill = F.kl_div(
                F.log_softmax(logits / t, dim=1),
                F.log_softmax(teacher_logits / t, dim=1),
                log_target=True,
                reduction="batchmean",
            ) * (t * t)
            loss = (1 - self.distill_weight) * loss + self.distill_weight * distill
        return loss, 0.0 if model.training else (logits.argmax(dim=1) == y).sum()


class Regression:
    """MSE or Huber loss on standardized targets; the metric is the negative squared error."""

    name = "regression"
    metric_name = "neg_mse"

    def __init__(self, loss: str = "mse"):
        self.kind = loss

    def loss(self, model, x, y, generator):
        prediction = model(x).float().squeeze(1)
        if self.kind == "huber":
            loss = F.huber_loss(prediction, y, delta=1.0)
        else:
            loss = F.mse_loss(prediction, y)
        return loss, 0.0 if model.training else -(prediction - y).pow(2).sum()
