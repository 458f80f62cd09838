"""Trainer, schedules, objectives and model building on small real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainpipe.data.datasets import Split
from trainpipe.errors import ConfigError, TrainingError
from trainpipe.models import Classifier, MaskedReconstructor, build_encoder
from trainpipe.models.checkpoint import (
    classifier_payload,
    from_bytes,
    load_classifier,
    to_bytes,
)
from trainpipe.models.config import ModelConfig
from trainpipe.train.config import FinetuneConfig, PretrainConfig
from trainpipe.train.objectives import Classification, MaskedReconstruction
from trainpipe.train.schedule import get_lr
from trainpipe.train.trainer import Trainer


def blobs(n: int = 400, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None].astype(np.float32) * 2
    return Split(x, y.astype(np.int64))


def test_warmup_then_cosine_to_zero():
    kwargs = {"peak_lr": 1.0, "total_steps": 100, "warmup_steps": 10}
    assert get_lr(0, schedule="cosine", **kwargs) == pytest.approx(0.1)
    assert get_lr(9, schedule="cosine", **kwargs) == pytest.approx(1.0)
    assert get_lr(55, schedule="cosine", **kwargs) == pytest.approx(0.5)
    assert get_lr(100, schedule="cosine", **kwargs) == pytest.approx(0.0, abs=1e-9)
    assert get_lr(55, schedule="linear", **kwargs) == pytest.approx(0.5)
    assert get_lr(99, schedule="constant", **kwargs) == 1.0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm", "rmsnorm"])
def test_encoders_map_images_to_embeddings(name, norm):
    cfg = ModelConfig(name=name, norm=norm, hidden_dim=16, embed_dim=8)
    encoder = build_encoder(cfg, [1, 8, 8])
    assert encoder(torch.zeros(3, 1, 8, 8)).shape == (3, 8)


def test_cnn_refuses_flat_tables():
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_encoder(ModelConfig(name="cnn"), [5])


def test_classifier_learns_separable_data():
    torch.manual_seed(0)
    cfg = FinetuneConfig(epochs=15, batch_size=32, lr=1e-2)
    model = Classifier(build_encoder(ModelConfig(name="mlp", hidden_dim=32, embed_dim=16), [4]), 3)
    result = Trainer(cfg, model, Classification(), stage="t").fit(blobs(), blobs(seed=1))
    assert result.history[-1].val_metric > 0.9
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_training_is_reproducible_with_a_seed():
    def run() -> torch.Tensor:
        torch.manual_seed(0)
        model = Classifier(
            build_encoder(ModelConfig(name="mlp", hidden_dim=16, embed_dim=8), [4]), 3
        )
        Trainer(FinetuneConfig(epochs=2, batch_size=64), model, Classification(), stage="t").fit(
            blobs(), blobs(seed=1)
        )
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_masked_reconstruction_reduces_loss():
    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(name="mlp", hidden_dim=32, embed_dim=16), [4])
    model = MaskedReconstructor(encoder, [4], 32)
    cfg = PretrainConfig(epochs=10, batch_size=32)
    result = Trainer(cfg, model, MaskedReconstruction(0.5), stage="p").fit(blobs(), blobs(seed=1))
    assert result.history[-1].val_loss < result.history[0].val_loss


def test_nan_loss_stops_with_step_and_causes():
    bad = blobs()
    x = bad.x.copy()
    x[0, 0] = np.nan
    model = Classifier(build_encoder(ModelConfig(name="mlp", hidden_dim=8, embed_dim=4), [4]), 3)
    with pytest.raises(TrainingError, match=r"loss became non-finite at step \d+ .*learning rate"):
        Trainer(FinetuneConfig(epochs=1, batch_size=400), model, Classification(), stage="t").fit(
            Split(x, bad.y), blobs(seed=1)
        )


def test_early_stopping_restores_best_weights():
    torch.manual_seed(0)
    # Labels of the validation split are random: validation loss gets worse as training fits.
    noisy = blobs(seed=1)
    noisy = Split(noisy.x, np.random.default_rng(3).integers(0, 3, len(noisy.y)))
    model = Classifier(build_encoder(ModelConfig(name="mlp", hidden_dim=64, embed_dim=32), [4]), 3)
    cfg = FinetuneConfig(epochs=40, batch_size=64, lr=1e-2, early_stopping_patience=3)
    trainer = Trainer(cfg, model, Classification(), stage="t")
    result = trainer.fit(blobs(), noisy)
    assert len(result.history) < 40
    best = min(r.val_loss for r in result.history)
    restored_loss, _ = trainer.evaluate(noisy)
    assert math.isclose(restored_loss, best, rel_tol=1e-5)


def test_checkpoint_round_trip_uses_weights_only():
    model = Classifier(
        build_encoder(ModelConfig(name="mlp", hidden_dim=8, embed_dim=4), [4]), 3
    ).eval()
    payload = classifier_payload(
        model, ModelConfig(name="mlp", hidden_dim=8, embed_dim=4), [4], list("abc")
    )
    restored = load_classifier(from_bytes(to_bytes(payload)))
    x = torch.randn(5, 4)
    assert torch.equal(model(x), restored(x))
