"""Model files that carry their own config, so loading needs nothing but the file.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers, never pickled
code from an artifact store.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import torch
from torch import nn

from trainpipe.data.preprocess import Preprocessor, PreprocessSpec, WithPreprocessing
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.models.heads import Blend, Ensemble, TargetScale
from trainpipe.models.trees import TreeEnsemble


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
    model: Classifier | Ensemble | Blend,
    cfg: ModelConfig,
    input_shape: list[int],
    label_names: list[str],
    preprocess: PreprocessSpec | None = None,
    target_scale: tuple[float, float] | None = None,
    blend: dict | None = None,
    training: dict | None = None,
) -> dict:
    """``input_shape`` is the network's (after preprocessing); ``preprocess`` travels with the
    weights so the loaded model takes encoded table rows. A ``Blend`` stores its network as
    ``state_dict``, its linear layer as ``linear_state_dict`` and its trees (if any) as
    ``trees_state_dict`` (packed node tensors); ``blend`` (plain JSON values:
    the weight, how it was chosen) is stored with them, for model.json and the reports, as is
    ``training`` (the fine-tuning schedule: effective batch size, steps, epochs)."""
    network = model.network if isinstance(model, Blend) else model
    payload = {
        "kind": "classifier",
        "model_config": cfg.model_dump(),
        "input_shape": list(input_shape),
        "label_names": list(label_names),
        "state_dict": network.state_dict(),
        "preprocess": preprocess.to_dict() if preprocess is not None else None,
        "ensemble_size": len(network.members) if isinstance(network, Ensemble) else 1,
        "task": "classification" if target_scale is None else "regression",
        "target_scale": None if target_scale is None else [float(v) for v in target_scale],
        # Plain JSON values only: a numpy scalar would make weights_only loading refuse the file.
        "blend": json.loads(json.dumps(blend, default=float)) if blend is not None else None,
        "training": json.loads(json.dumps(training)) if training is not None else None,
    }
    if isinstance(model, Blend):
        payload["linear_state_dict"] = model.linear.state_dict()
        payload["blend"] = {**(payload["blend"] or {}), "linear_weight": model.linear_weight}
        if model.trees is not None:
            payload["trees_state_dict"] = model.trees.state_dict()
            payload["blend"]["trees_weight"] = model.trees_weight
    return payload


def load_encoder(payload: dict) -> nn.Module:
    encoder = build_encoder(ModelConfig(**payload["model_config"]), payload["input_shape"])
    encoder.load_state_dict(payload["state_dict"])
    return encoder


def load_classifier(payload: dict) -> nn.Module:
    """The classifier (or ensemble); wrapped in its preprocessing when trained on a table."""
    cfg = ModelConfig(**payload["model_config"])

    regression = payload.get("task") == "regression"
    outputs = 1 if regression else len(payload["label_names"])

    def member() -> Classifier:
        return Classifier(build_encoder(cfg, payload["input_shape"]), outputs)

    size = payload.get("ensemble_size", 1)
    average = "mean" if regression else "probability"
    model = Ensemble([member() for _ in range(size)], average) if size > 1 else member()
    model.load_state_dict(payload["state_dict"])
    if payload.get("linear_state_dict") is not None:
        linear = nn.Linear(math.prod(payload["input_shape"]), outputs)
        linear.load_state_dict(payload["linear_state_dict"])
        trees_state = payload.get("trees_state_dict")
        model = Blend(
            model,
            linear,
            payload["blend"]["linear_weight"],
            average,
            trees=TreeEnsemble.from_state(trees_state) if trees_state is not None else None,
            trees_weight=payload["blend"].get("trees_weight", 0.0),
        )
    if regression:
        model = TargetScale(model, *payload["target_scale"])
    if payload.get("preprocess"):
        spec = PreprocessSpec.from_dict(payload["preprocess"])
        return WithPreprocessing(Preprocessor(spec), model).eval()
    return model.eval()
