"""The default fine-tuning schedule of a table: an automatic batch size that gives a small table
several optimizer steps per epoch, enough epochs for ``min_steps``, an early-stopping patience of
at least ``patience_min_steps`` steps, and no early stop during warmup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainpipe.data.datasets import Split
from trainpipe.errors import ConfigError
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.train.config import FinetuneConfig, PretrainConfig
from trainpipe.train.finetuning import auto_batch_size, resolve_batch_size, resolve_schedule
from trainpipe.train.objectives import Classification
from trainpipe.train.pretraining import resolve_pretrain_batch
from trainpipe.train.trainer import Trainer


@pytest.mark.parametrize(
    ("examples", "table", "batch"),
    [
        (115, True, 16),  # wine's training split: 8 steps per epoch, not 1 or 2
        (370, True, 23),  # breast_cancer's: 16 steps per epoch
        (1950, True, 64),
        (75_000, True, 64),  # a 100k-row table keeps the former default
        (10, True, 16),
        (230, False, 64),  # images (the digits demo) keep 64
    ],
)
def test_auto_batch_size(examples, table, batch):
    assert auto_batch_size(examples, table) == batch


def test_auto_batch_size_divides_into_accumulation_steps():
    assert auto_batch_size(370, True, grad_accumulation_steps=4) == 20
    assert auto_batch_size(10, True, grad_accumulation_steps=32) == 32
    cfg = resolve_batch_size(FinetuneConfig(grad_accumulation_steps=3), 370, table=True)
    assert cfg.batch_size % 3 == 0


def test_a_configured_batch_size_is_kept():
    cfg = resolve_schedule(FinetuneConfig(batch_size=256), 115, table=True)
    assert cfg.batch_size == 256
    # One step per epoch: 600 epochs for min_steps, patience 100 epochs (= 100 steps).
    assert (cfg.epochs, cfg.early_stopping_patience) == (600, 100)


def test_a_small_table_gets_steps_per_epoch_min_steps_and_patience_in_steps():
    cfg = resolve_schedule(FinetuneConfig(), 115, table=True)
    steps_per_epoch = math.ceil(115 / cfg.batch_size)
    assert steps_per_epoch >= 7
    assert cfg.epochs * steps_per_epoch >= cfg.min_steps
    assert cfg.early_stopping_patience * steps_per_epoch >= cfg.patience_min_steps
    assert cfg.early_stopping_patience > FinetuneConfig().early_stopping_patience


def test_a_large_table_and_images_keep_the_configured_schedule():
    large = resolve_schedule(FinetuneConfig(), 75_000, table=True)
    assert (large.batch_size, large.epochs, large.early_stopping_patience) == (64, 30, 8)
    images = resolve_schedule(FinetuneConfig(), 230, table=False)
    assert (images.batch_size, images.epochs, images.early_stopping_patience) == (64, 30, 8)


def test_no_patience_stays_no_patience():
    cfg = resolve_schedule(FinetuneConfig(early_stopping_patience=None), 115, table=True)
    assert cfg.early_stopping_patience is None


def test_the_trainer_refuses_an_unresolved_batch_size():
    model = Classifier(build_encoder(ModelConfig(name="mlp", hidden_dim=8), [4]), 2)
    split = Split(np.zeros((8, 4), np.float32), np.zeros(8, np.int64))
    with pytest.raises(ConfigError, match="no batch_size"):
        Trainer(FinetuneConfig(), model, Classification(), stage="t").fit(split, split)


class FlatValidation(Classification):
    """Cross-entropy in training; a constant validation loss, so no epoch after the first is
    ever better and early stopping is due as soon as patience allows."""

    def loss(self, model, x, y, generator):
        if model.training:
            return super().loss(model, x, y, generator)
        return torch.tensor(1.0), torch.tensor(0.0)


def test_early_stopping_waits_for_the_end_of_warmup():
    rng = np.random.default_rng(0)
    split = Split(rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 2, 32))
    model = Classifier(build_encoder(ModelConfig(name="mlp", hidden_dim=8), [4]), 2)
    # One step per epoch, 10 steps, warmup 5 steps; patience 1 would stop at epoch 2.
    cfg = FinetuneConfig(epochs=10, batch_size=32, warmup_fraction=0.5, early_stopping_patience=1)
    result = Trainer(cfg, model, FlatValidation(), stage="t").fit(split, split)
    assert len(result.history) == 5
    assert result.best_epoch == 1
    assert (result.batch_size, result.steps_per_epoch, result.warmup_steps) == (32, 1, 5)
    assert (result.max_epochs, result.patience_epochs) == (10, 1)


@pytest.mark.parametrize(
    ("examples", "table", "batch"),
    [
        (115, True, 16),  # wine: 8 pretraining steps per epoch instead of 1
        (370, True, 23),
        (1800, True, 112),
        (4096, True, 256),
        (75_000, True, 256),  # a large table keeps the former fixed default
        (1000, False, 256),  # images (the digits demo's contrastive pairs) keep 256
    ],
)
def test_automatic_pretraining_batch(examples, table, batch):
    cfg = resolve_pretrain_batch(PretrainConfig(), examples, table)
    assert cfg.batch_size == batch
    assert resolve_pretrain_batch(PretrainConfig(batch_size=64), examples, table).batch_size == 64


def test_the_pretrain_stage_trains_a_small_table_with_the_automatic_batch(tmp_path):
    """Through the stage: 150 training rows pretrain with 16-row batches (10 steps per
    epoch) and the summary says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainpipe.artifacts import ArtifactSet
    from trainpipe.config import load_config
    from trainpipe.stages.pretrain import run_pretrain
    from trainpipe.stages.validate import run_validate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(250, 4))
    table = {f"f{i}": x[:, i] for i in range(4)} | {"label": (x[:, 0] > 0).astype(int)}
    pq.write_table(pa.table(table), tmp_path / "t.parquet")
    cfg = load_config(
        None,
        [
            f"data.source={tmp_path / 't.parquet'}",
            f"storage.uri=file://{tmp_path / 'store'}",
            "pretrain.epochs=2",
        ],
    )
    run_id, data_uri = run_validate(cfg.to_json(), "pretrain-batch")
    summary = ArtifactSet.open(run_pretrain(cfg.to_json(), run_id, data_uri)).summary
    train_rows = ArtifactSet.open(data_uri).summary["train"]
    assert summary["batch_size"] == max(16, train_rows // 16) < 256
    assert summary["steps"] == 2 * math.ceil(train_rows / summary["batch_size"])
