"""Encoders by name. Each maps ``[batch, *input_shape]`` to ``[batch, embed_dim]`` and lists its
``blocks()`` from input to output, which layer-wise learning-rate decay and gradual unfreezing
walk from the top down."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainpipe.errors import ConfigError
from trainpipe.models.config import DEFAULT_WIDTH, ModelConfig
from trainpipe.models.layers import activation, init_weights, norm_1d, norm_2d


class MLPEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        super().__init__()
        width = math.prod(input_shape)
        layers = []
        for _ in range(cfg.depth):
            layers.append(
                nn.Sequential(
                    nn.Linear(width, cfg.hidden_dim),
                    norm_1d(cfg.norm, cfg.hidden_dim),
                    activation(cfg.activation),
                    nn.Dropout(cfg.dropout),
                )
            )
            width = cfg.hidden_dim
        self.layers = nn.Sequential(*layers)
        self.project = nn.Linear(width, cfg.embed_dim)
        self.embed_dim = cfg.embed_dim

    def blocks(self) -> list[nn.Module]:
        return [*self.layers, self.project]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.layers(x.flatten(1)))


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
        self.layers = nn.Sequential(*(ResidualBlock(channels, cfg) for _ in range(cfg.depth)))
        self.project = nn.Linear(channels, cfg.embed_dim)
        self.embed_dim = cfg.embed_dim

    def blocks(self) -> list[nn.Module]:
        return [self.stem, *self.layers, self.project]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.layers(self.stem(x)).mean(dim=(2, 3)))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and MLP, each with a residual connection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        width = cfg.hidden_dim
        self.norm1 = norm_1d(cfg.norm if cfg.norm != "batchnorm" else "layernorm", width)
        self.attention = nn.MultiheadAttention(
            width, cfg.heads, dropout=cfg.dropout, batch_first=True
        )
        self.norm2 = norm_1d(cfg.norm if cfg.norm != "batchnorm" else "layernorm", width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width),
            activation(cfg.activation),
            nn.Dropout(cfg.dropout),
            nn.Linear(4 * width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.attention(normed, normed, normed, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _TokenEncoder(nn.Module):
    """Shared tail of vit and transformer: position embeddings, blocks, pooled projection."""

    def __init__(self, cfg: ModelConfig, num_tokens: int):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, num_tokens, cfg.hidden_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.layers = nn.Sequential(*(TransformerBlock(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.project = nn.Linear(cfg.hidden_dim, cfg.embed_dim)
        self.embed_dim = cfg.embed_dim

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.layers(tokens + self.position)
        return self.project(self.norm(hidden).mean(dim=1))


class ViTEncoder(_TokenEncoder):
    """Cut images into ``patch_size`` squares, embed each, run transformer blocks, mean-pool."""

    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        channels, height, width = input_shape
        if height % cfg.patch_size or width % cfg.patch_size:
            raise ConfigError(
                f"config error: model.patch_size={cfg.patch_size} does not divide the "
                f"{height}x{width} images; choose a divisor"
            )
        super().__init__(cfg, (height // cfg.patch_size) * (width // cfg.patch_size))
        self.patchify = nn.Conv2d(channels, cfg.hidden_dim, cfg.patch_size, cfg.patch_size)

    def blocks(self) -> list[nn.Module]:
        return [self.patchify, *self.layers, nn.ModuleList([self.norm, self.project])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(self.patchify(x).flatten(2).transpose(1, 2))


class SequenceTransformerEncoder(_TokenEncoder):
    """Sequences ``[batch, length]`` or ``[batch, length, features]``; each position is a token.

    A table row ``[batch, features]`` is read as a sequence of scalar features (the
    FT-Transformer reading), so the same encoder serves tables and sequences.
    """

    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        length = input_shape[0]
        features = input_shape[1] if len(input_shape) == 2 else 1
        super().__init__(cfg, length)
        self.features = features
        self.embed = nn.Linear(features, cfg.hidden_dim)

    def blocks(self) -> list[nn.Module]:
        return [self.embed, *self.layers, nn.ModuleList([self.norm, self.project])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(x.shape[0], -1, self.features)  # shape[0] keeps the batch symbolic
        return self.encode_tokens(self.embed(tokens))


class LinearEncoder(nn.Module):
    """No hidden layer: the flattened input is the embedding, so the head alone is a linear
    model (the candidate a table's network is compared with on validation)."""

    def __init__(self, cfg: ModelConfig, input_shape: list[int]):
        super().__init__()
        self.embed_dim = math.prod(input_shape)

    def blocks(self) -> list[nn.Module]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def resolve_name(name: str, input_shape: list[int]) -> str:
    if name == "auto":
        return "cnn" if len(input_shape) == 3 else "mlp"
    return name


def resolve_model(cfg: ModelConfig, input_shape: list[int]) -> ModelConfig:
    """The config with ``auto`` choices made for this input: architecture and width."""
    name = resolve_name(cfg.name, input_shape)
    return cfg.model_copy(
        update={"name": name, "hidden_dim": cfg.hidden_dim or DEFAULT_WIDTH[name]}
    )


def build_encoder(cfg: ModelConfig, input_shape: list[int]) -> nn.Module:
    cfg = resolve_model(cfg, input_shape)
    if cfg.name in ("cnn", "vit") and len(input_shape) != 3:
        raise ConfigError(
            f"config error: model.name={cfg.name!r} needs image inputs [channels, height, "
            f"width], but the data has shape {input_shape}; use model.name=mlp or set "
            "data.feature_shape"
        )
    if cfg.name == "transformer" and len(input_shape) not in (1, 2):
        raise ConfigError(
            f"config error: model.name='transformer' reads [length] or [length, features] "
            f"sequences, but the data has shape {input_shape}; use vit for images"
        )
    encoders = {
        "mlp": MLPEncoder,
        "cnn": CNNEncoder,
        "vit": ViTEncoder,
        "transformer": SequenceTransformerEncoder,
        "linear": LinearEncoder,
    }
    encoder = encoders[cfg.name](cfg, input_shape)
    init_weights(encoder, cfg.init, cfg.activation)
    return encoder
