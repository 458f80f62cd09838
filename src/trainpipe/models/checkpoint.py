"""Model files that carry their own config, so loading needs nothing but the file.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers, never pickled
code from an artifact store.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig


def to_bytes(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def encoder_payload(encoder: nn.Module, cfg: ModelConfig, input_shape: list[int]) -> dict:
    return {
        "kind": "encoder",
        "model_config": cfg.model_dump(),
        "input_shape": list(input_shape),
        "state_dict": encoder.state_dict(),
    }


def classifier_payload(
    model: Classifier, cfg: ModelConfig, input_shape: list[int], label_names: list[str]
) -> dict:
    return {
        "kind": "classifier",
        "model_config": cfg.model_dump(),
        "input_shape": list(input_shape),
        "label_names": list(label_names),
        "state_dict": model.state_dict(),
    }


def load_encoder(payload: dict) -> nn.Module:
    encoder = build_encoder(ModelConfig(**payload["model_config"]), payload["input_shape"])
    encoder.load_state_dict(payload["state_dict"])
    return encoder


def load_classifier(payload: dict) -> Classifier:
    cfg = ModelConfig(**payload["model_config"])
    model = Classifier(build_encoder(cfg, payload["input_shape"]), len(payload["label_names"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
