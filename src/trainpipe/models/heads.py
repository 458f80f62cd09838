"""Task heads on top of an encoder."""

from __future__ import annotations

import math

import torch
from torch import nn


class Classifier(nn.Module):
    """Encoder plus a linear layer producing class logits."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class MaskedReconstructor(nn.Module):
    """Pretraining model: encode a masked input, predict every original feature.

    The decoder is thrown away after pretraining; only the encoder carries over.
    """

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
