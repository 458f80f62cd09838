"""A real small digits classifier and the artifacts the export and deploy stages read.

    model = train_digits_mlp(dataset)                       # ~97% validation accuracy, seconds
    cfg_json, data_uri = validated_data(storage_uri)        # the real validate_data stage
    finetune_uri = finetune_artifact(cfg_json, run_id, model, dataset)
    version_uri = registry_version(cfg_json, run_id, export_uri, model, dataset)

Training is a plain torch loop (not the finetune stage) so these tests stay fast and do not move
when the training engine changes.
"""

from __future__ import annotations

import torch

from trainpipe.config import Config
from trainpipe.data.datasets import Dataset
from trainpipe.evaluate.metrics import classification_metrics
from trainpipe.evaluate.predict import predict_logits
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import classifier_payload, to_bytes
from trainpipe.models.config import ModelConfig
from trainpipe.stages.context import make_context
from trainpipe.stages.validate import run_validate

MODEL_CONFIG = ModelConfig(name="mlp", hidden_dim=64, embed_dim=32)


def train_digits_mlp(dataset: Dataset, *, steps: int = 120, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(build_encoder(MODEL_CONFIG, dataset.feature_shape), dataset.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.as_tensor(dataset.train.x), torch.as_tensor(dataset.train.y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def config_json(storage_uri: str, endpoint_url: str | None = None, **sections) -> str:
    raw = {"storage": {"uri": storage_uri, "endpoint_url": endpoint_url}, **sections}
    return Config.model_validate(raw).to_json()


def validated_data(cfg_json: str, run_id: str) -> str:
    return run_validate(cfg_json, run_id)[1]


def finetune_artifact(cfg_json: str, run_id: str, model: Classifier, dataset: Dataset) -> str:
    writer = make_context(cfg_json, run_id).writer("finetune")
    payload = classifier_payload(model, MODEL_CONFIG, dataset.feature_shape, dataset.label_names)
    writer.put_bytes("model.pt", to_bytes(payload))
    return writer.commit()


def registry_version(
    cfg_json: str, run_id: str, export_uri: str, evaluated: Classifier, dataset: Dataset
) -> str:
    """What register writes: the export's files plus the evaluation of ``evaluated``."""
    ctx = make_context(cfg_json, run_id)
    exported = ctx.open(export_uri)
    scores = classification_metrics(
        dataset.test.y, predict_logits(evaluated, dataset.test.x), dataset.label_names
    )
    writer = ctx.writer("version")
    for name in ("model.onnx", "model.json", "parity.json"):
        writer.put_bytes(name, exported.get_bytes(name))
    writer.put_json("metrics.json", scores)
    return writer.commit()
