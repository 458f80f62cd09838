"""Optimization settings shared by the pretraining and fine-tuning stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe.configbase import Section


class OptimConfig(Section):
    epochs: int = Field(30, ge=1, le=100_000)
    """Passes over the training split."""

    batch_size: int = Field(64, ge=1, le=1_000_000)
    """Global batch size (split across processes when distributed)."""

    optimizer: Literal["adamw", "adam", "sgd", "sgd_momentum", "sgd_nesterov"] = "adamw"
    """Optimizer by name; AdamW applies decoupled weight decay, none on biases and norms."""

    lr: float = Field(2e-3, gt=0.0, le=10.0)
    """Peak learning rate, reached at the end of warmup."""

    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    """Weight decay on matrices and kernels only."""

    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""

    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of all optimizer steps spent warming the learning rate up linearly from zero."""

    grad_clip_norm: float | None = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value; None disables clipping."""

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many epochs without a better validation loss and restore the best
    weights; None trains for every epoch."""

    seed: int = 0
    """Seed for initialization, shuffling and masking; the same seed reproduces a run."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when present, else CPU."""


class PretrainConfig(OptimConfig):
    enabled: bool = True
    """Run self-supervised pretraining; when false, fine-tuning starts from a random encoder."""

    objective: Literal["masked_reconstruction"] = "masked_reconstruction"
    """Self-supervised objective on unlabelled inputs."""

    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    """Share of input features hidden for masked reconstruction."""

    epochs: int = Field(40, ge=1, le=100_000)
    """Passes over the (unlabelled) training split."""

    batch_size: int = Field(128, ge=1, le=1_000_000)
    """Global batch size."""


class FinetuneConfig(OptimConfig):
    label_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Share of the training split whose labels fine-tuning may use (stratified, seeded)."""

    strategy: Literal["full", "linear_probe"] = "full"
    """``full`` trains encoder and head; ``linear_probe`` freezes the pretrained encoder."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Cross-entropy label smoothing."""
