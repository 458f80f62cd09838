"""Encoders: an MLP for any input and a residual CNN for images."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainpipe.errors import ConfigError
from trainpipe.models.config import ModelConfig
from trainpipe.models.layers import activation, init_weights, norm_1d, norm_2d


class MLPEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for _ in range(cfg.depth):
            layers += [
                nn.Linear(width, cfg.hidden_dim),
                norm_1d(cfg.norm, cfg.hidden_dim),
                activation(cfg.activation),
                nn.Dropout(cfg.dropout),
            ]
            width = cfg.hidden_dim
        layers.append(nn.Linear(width, cfg.embed_dim))
        self.net = nn.Sequential(*layers)
        self.embed_dim = cfg.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            norm_2d(cfg.norm, channels),
            activation(cfg.activation),
            nn.Dropout2d(cfg.dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            norm_2d(cfg.norm, channels),
        )
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class CNNEncoder(nn.Module):
    """Conv stem, ``depth`` residual blocks, global average pooling, linear projection."""

    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        super().__init__()
        channels = cfg.hidden_dim
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False),
            norm_2d(cfg.norm, channels),
            activation(cfg.activation),
        )
        self.blocks = nn.Sequential(*(ResidualBlock(channels, cfg) for _ in range(cfg.depth)))
        self.project = nn.Linear(channels, cfg.embed_dim)
        self.embed_dim = cfg.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.project(features.mean(dim=(2, 3)))


def build_encoder(cfg: ModelConfig, input_shape: list[int]) -> nn.Module:
    if cfg.name == "cnn":
        if len(input_shape) != 3:
            raise ConfigError(
                f"config error: model.name='cnn' needs image inputs [channels, height, width], "
                f"but the data has shape {input_shape}; use model.name=mlp or set "
                "data.feature_shape"
            )
        encoder: nn.Module = CNNEncoder(cfg, input_shape)
    else:
        encoder = MLPEncoder(cfg, input_shape)
    init_weights(encoder, cfg.init, cfg.activation)
    return encoder
