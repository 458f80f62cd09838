"""Architecture choice and sizes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainpipe.configbase import Section


class ModelConfig(Section):
    name: Literal["auto", "mlp", "cnn", "vit", "transformer", "linear"] = "auto"
    """Encoder architecture: ``mlp`` (any input), ``cnn`` (residual CNN, images), ``vit``
    (patch transformer, images), ``transformer`` (encoder over sequences; a table's features
    are read as a sequence of scalars), ``linear`` (no hidden layer: with the head, a
logistic/linear regression); ``auto`` picks cnn for images and mlp otherwise."""

    hidden_dim: int | None = Field(None, ge=8, le=8192)
    """Width of the hidden layers (mlp) or channels (cnn); None: 128 for an mlp (tables),
    32 for the image and sequence encoders."""

    embed_dim: int = Field(64, ge=4, le=8192)
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

    heads: int = Field(4, ge=1, le=64)
    """Attention heads (vit, transformer); must divide ``hidden_dim``."""

    patch_size: int = Field(2, ge=1, le=64)
    """Side of the square patches a vit cuts images into."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.name in ("vit", "transformer") and (self.hidden_dim or 32) % self.heads:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} is not divisible by heads {self.heads}; "
                "choose sizes that divide evenly"
            )
        return self


DEFAULT_WIDTH = {"mlp": 128, "cnn": 32, "vit": 32, "transformer": 32, "linear": 8}
