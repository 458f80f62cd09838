"""Task heads on top of an encoder.

Every model's ``forward`` does all of its work, so DistributedDataParallel (which hooks
``forward``) sees every parameter that gets a gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Classifier(nn.Module):
    """Encoder plus a linear layer producing class logits."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Ensemble(nn.Module):
    """Members with the same architecture. Classification: averaged in probability, returning
    log-probabilities (valid logits: their softmax is the mean probability). Regression
    (``average="mean"``): the mean prediction."""

    def __init__(self, members: list[nn.Module], average: str = "probability"):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.average == "mean":
            return torch.stack([m(x) for m in self.members]).mean(dim=0)
        log_probs = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


class Blend(nn.Module):
    """A network's prediction blended with a linear model's, and optionally gradient-boosted
    trees' (``trainpipe.models.trees.TreeEnsemble``), on the same input: probabilities mixed
    ``linear_weight : trees_weight : rest`` (the network gets the rest), returned as
    log-probabilities (valid logits), or for regression (``average="mean"``) the weighted mean
    value."""

    def __init__(
        self,
        network: nn.Module,
        linear: nn.Linear,
        linear_weight: float,
        average: str,
        trees: nn.Module | None = None,
        trees_weight: float = 0.0,
    ):
        super().__init__()
        self.network = network
        self.linear = linear
        self.trees = trees
        self.average = average
        self.linear_weight = float(linear_weight)
        self.trees_weight = float(trees_weight) if trees is not None else 0.0
        self.network_weight = max(1.0 - self.linear_weight - self.trees_weight, 0.0)
        weights = [self.linear_weight, self.network_weight]
        if trees is not None:
            weights.append(self.trees_weight)
        # log(0) would put -inf into the exported graph; e^-69 is nothing next to 1.
        floored = torch.tensor([max(w, 1e-30) for w in weights])
        self.register_buffer("log_weights", torch.log(floored))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.flatten(1)
        outputs = [self.linear(rows), self.network(x)]
        if self.trees is not None:
            outputs.append(self.trees(rows))
        if self.average == "mean":
            weights = (self.linear_weight, self.network_weight, self.trees_weight)
            return sum(w * out for w, out in zip(weights, outputs, strict=False))
        mixed = torch.stack(
            [F.log_softmax(out, dim=1) + self.log_weights[i] for i, out in enumerate(outputs)]
        )
        return torch.logsumexp(mixed, dim=0)


class TargetScale(nn.Module):
    """A regression network trained on standardized targets, answering in the target's units."""

    def __init__(self, network: nn.Module, mean: float, std: float):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) * self.std + self.mean


class MaskedReconstructor(nn.Module):
    """Encode a masked input, predict every original feature (the decoder is discarded)."""

    def __init__(self, encoder: nn.Module, input_shape: list[int], hidden_dim: int):
        super().__init__()
        self.encoder = encoder
        self.input_shape = list(input_shape)
        self.decoder = nn.Sequential(
            nn.Linear(encoder.embed_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, math.prod(input_shape)),
        )

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        reconstruction = self.decoder(self.encoder(masked))
        return reconstruction.view(len(masked), *self.input_shape)


class RotationPredictor(nn.Module):
    """Predict which of four quarter-turns was applied to an image."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, 4)

    def forward(self, rotated: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(rotated))


class ContrastiveProjector(nn.Module):
    """SimCLR-style: encoder plus an MLP projector; returns unit-norm projections."""

    def __init__(self, encoder: nn.Module, projection_dim: int = 64):
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(
            nn.Linear(encoder.embed_dim, encoder.embed_dim),
            nn.ReLU(),
            nn.Linear(encoder.embed_dim, projection_dim),
        )

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(views)), dim=1)
