"""Architecture choice and sizes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section


class ModelConfig(Section):
    name: Literal["mlp", "cnn"] = "mlp"
    """Encoder architecture: ``mlp`` (any input) or ``cnn`` (residual CNN, image inputs)."""

    hidden_dim: int = Field(256, ge=8, le=8192)
    """Width of the hidden layers (mlp) or channels (cnn)."""

    embed_dim: int = Field(128, ge=4, le=8192)
    """Size of the encoder's output embedding, shared by pretraining and fine-tuning heads."""

    depth: int = Field(2, ge=1, le=64)
    """Number of hidden blocks."""

    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout probability inside the encoder blocks."""

    activation: Literal["relu", "gelu", "silu", "tanh"] = "gelu"
    """Non-linearity of every block."""

    norm: Literal["layernorm", "batchnorm", "rmsnorm", "none"] = "layernorm"
    """Normalization inside each block."""

    init: Literal["kaiming", "xavier"] = "kaiming"
    """Weight initialization: Kaiming suits ReLU-family activations, Xavier suits tanh."""
