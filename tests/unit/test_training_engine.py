"""The training engine's options, each selectable by name and checked for its effect."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainpipe.data.datasets import Split
from trainpipe.errors import ConfigError, TrainingError
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.train.augment import augment
from trainpipe.train.config import FinetuneConfig, PretrainConfig
from trainpipe.train.diagnosis import diagnose, linear_baseline_train_loss
from trainpipe.train.finetuning import finetune_lr_factor, finetune_param_groups
from trainpipe.train.objectives import Classification
from trainpipe.train.optim import build_optimizer
from trainpipe.train.pretraining import pretraining_setup
from trainpipe.train.schedule import get_lr
from trainpipe.train.trainer import Trainer


def blobs(n: int = 300, seed: int = 0, shape=(4,)) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    x += y.reshape(-1, *([1] * len(shape))).astype(np.float32)
    return Split(x, y.astype(np.int64))


def small_classifier(shape=(4,), **kwargs) -> Classifier:
    torch.manual_seed(0)
    cfg = ModelConfig(name=kwargs.pop("name", "mlp"), hidden_dim=16, embed_dim=8, **kwargs)
    return Classifier(build_encoder(cfg, list(shape)), 3)


@pytest.mark.parametrize(
    "optimizer", ["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"]
)
def test_every_optimizer_trains(optimizer):
    lr = {"sgd": 0.1, "sgd_momentum": 0.05, "sgd_nesterov": 0.05, "adagrad": 0.05}.get(
        optimizer, 5e-3
    )
    cfg = FinetuneConfig(epochs=6, batch_size=32, optimizer=optimizer, lr=lr)
    result = Trainer(cfg, small_classifier(), Classification(), stage="t").fit(
        blobs(), blobs(seed=1)
    )
    assert result.history[-1].train_loss < 0.8 * result.history[0].train_loss


def test_no_weight_decay_on_biases_and_norms():
    model = small_classifier()
    optimizer = build_optimizer(model, FinetuneConfig(weight_decay=0.1))
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert group["weight_decay"] == (0.1 if param.ndim >= 2 else 0.0)


def test_step_and_one_cycle_schedules():
    step = {"peak_lr": 1.0, "total_steps": 100, "warmup_steps": 0, "steps_per_epoch": 5}
    assert get_lr(49, schedule="step", step_every_epochs=10, step_gamma=0.1, **step) == 1.0
    assert get_lr(50, schedule="step", step_every_epochs=10, step_gamma=0.1, **step) == 0.1
    one = {"peak_lr": 1.0, "total_steps": 100, "warmup_steps": 0, "schedule": "one_cycle"}
    assert get_lr(0, **one) == pytest.approx(1 / 25)
    assert get_lr(30, **one) == pytest.approx(1.0)
    assert get_lr(100, **one) == pytest.approx(1e-4)


def test_bf16_autocast_on_cpu_trains():
    cfg = FinetuneConfig(epochs=4, batch_size=32, precision="bf16", device="cpu", lr=5e-3)
    result = Trainer(cfg, small_classifier(), Classification(), stage="t").fit(
        blobs(), blobs(seed=1)
    )
    assert result.history[-1].val_metric > 0.6


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        FinetuneConfig(precision="fp16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            Trainer(
                FinetuneConfig(precision="fp16"), small_classifier(), Classification(), stage="t"
            )


def test_accumulation_must_divide_the_batch():
    with pytest.raises(ValueError, match="not divisible by grad_accumulation_steps"):
        FinetuneConfig(batch_size=30, grad_accumulation_steps=4)


def test_nonfinite_steps_can_be_skipped():
    data = blobs()
    x = data.x.copy()
    x[:5] = np.nan  # the first examples poison whichever batches hold them
    cfg = FinetuneConfig(epochs=2, batch_size=32, on_nonfinite_loss="skip")
    result = Trainer(cfg, small_classifier(), Classification(), stage="t").fit(
        Split(x, data.y), blobs(seed=1)
    )
    assert result.skipped_steps
    assert all(math.isfinite(r.train_loss) for r in result.history)


def test_loss_read_back_every_n_steps_trains_exactly_as_every_step(tmp_path):
    """Losses left on the device and read back every 4 steps (one sync for all of them) book
    the same losses, spikes and weights as a sync per step, with accumulation and a checkpoint
    that falls between two read-backs."""
    from trainpipe.storage import open_store
    from trainpipe.train.checkpoint import CheckpointStore

    runs = {}
    for every in (1, 4):
        cfg = FinetuneConfig(
            epochs=2,
            batch_size=32,
            grad_accumulation_steps=2,
            loss_readback_every_steps=every,
            checkpoint_every_steps=3,
            early_stopping_patience=None,
        )
        steps: list[tuple[int, float]] = []
        store = open_store(str(tmp_path / f"every-{every}"))
        checkpoints = CheckpointStore(store, "r", "t", keep=2)
        trainer = Trainer(
            cfg,
            small_classifier(),
            SpikeAt(7),
            stage="t",
            checkpoints=checkpoints,
            on_step_end=lambda step, loss, seen=steps: seen.append((step, loss)),
        )
        runs[every] = (trainer.fit(blobs(), blobs(seed=1)), trainer.full_state_dict(), steps)
    (one, one_state, one_steps), (four, four_state, four_steps) = runs[1], runs[4]
    assert [r.train_loss for r in four.history] == [r.train_loss for r in one.history]
    assert four.loss_spikes == one.loss_spikes and one.loss_spikes
    assert four_steps == one_steps and len(one_steps) == one.steps
    for name, value in one_state.items():
        assert torch.equal(value, four_state[name]), name


def test_loss_read_back_late_still_stops_at_the_non_finite_step():
    data = blobs()
    x = data.x.copy()
    x[:] = np.nan
    cfg = FinetuneConfig(epochs=1, batch_size=32, loss_readback_every_steps=4)
    with pytest.raises(TrainingError, match=r"non-finite at step 0 \(epoch 1\)"):
        Trainer(cfg, small_classifier(), Classification(), stage="t").fit(
            Split(x, data.y), blobs(seed=1)
        )
    with pytest.raises(ValueError, match="cannot skip non-finite steps"):
        FinetuneConfig(loss_readback_every_steps=4, on_nonfinite_loss="skip")


class SpikeAt(Classification):
    """Classification whose loss is multiplied a hundredfold at one chosen call."""

    def __init__(self, call: int):
        super().__init__()
        self.call, self.calls = call, 0

    def loss(self, model, x, y, generator):
        loss, correct = super().loss(model, x, y, generator)
        if model.training:
            self.calls += 1
            if self.calls == self.call:
                loss = loss * 100
        return loss, correct


def test_loss_spikes_are_logged(capsys):
    cfg = FinetuneConfig(epochs=3, batch_size=32, grad_clip_norm=1.0)
    result = Trainer(cfg, small_classifier(), SpikeAt(15), stage="t").fit(blobs(), blobs(seed=1))
    assert result.loss_spikes == [14]
    assert "loss spike at step 14" in capsys.readouterr().err


def test_linear_probe_leaves_the_encoder_unchanged():
    model = small_classifier()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.encoder.requires_grad_(False)
    cfg = FinetuneConfig(epochs=2, batch_size=64, strategy="linear_probe")
    Trainer(
        cfg,
        model,
        Classification(),
        stage="t",
        param_groups=finetune_param_groups(model, cfg),
        lr_factor=finetune_lr_factor(cfg),
    ).fit(blobs(), blobs(seed=1))
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_gradual_unfreezing_and_layer_decay():
    model = small_classifier()
    cfg = FinetuneConfig(
        epochs=2,
        batch_size=64,
        strategy="gradual_unfreeze",
        unfreeze_every_epochs=2,
        layer_lr_decay=0.5,
    )
    groups = finetune_param_groups(model, cfg)
    factor = finetune_lr_factor(cfg)
    head = [g for g in groups if g["depth"] == 0]
    top = [g for g in groups if g["depth"] == 1]
    assert factor(head[0], 1) == 1.0
    assert factor(top[0], 1) == 0.0  # the encoder waits during the first two epochs
    assert factor(top[0], 3) == 0.5  # then trains at the decayed rate
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    Trainer(cfg, model, Classification(), stage="t", param_groups=groups, lr_factor=factor).fit(
        blobs(), blobs(seed=1)
    )
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_distillation_pulls_the_student_to_the_teacher():
    """On shuffled labels only the teacher carries signal: a distilled student follows it."""
    teacher = small_classifier()
    Trainer(
        FinetuneConfig(epochs=5, batch_size=64), teacher, Classification(), stage="teacher"
    ).fit(blobs(), blobs(seed=1))
    data = blobs()
    shuffled = Split(data.x, np.random.default_rng(5).permutation(data.y))
    x = torch.as_tensor(blobs(seed=2).x)
    agreement = {}
    for weight in (1.0, 0.0):
        student = small_classifier(depth=1)
        objective = Classification(teacher=teacher, distill_weight=weight)
        Trainer(
            FinetuneConfig(epochs=20, batch_size=64, lr=1e-2), student, objective, stage="s"
        ).fit(shuffled, blobs(seed=1))
        with torch.no_grad():
            agreement[weight] = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agreement[1.0] > 0.75
    assert agreement[1.0] > agreement[0.0] + 0.25


@pytest.mark.parametrize("objective", ["masked_reconstruction", "rotation", "contrastive"])
def test_pretraining_objectives_learn(objective):
    data = blobs(256, shape=(1, 6, 6))
    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(name="cnn", hidden_dim=8, embed_dim=16), [1, 6, 6])
    cfg = PretrainConfig(objective=objective, epochs=6, batch_size=64)
    model, obj = pretraining_setup(cfg, encoder, [1, 6, 6], 16)
    result = Trainer(cfg, model, obj, stage="p").fit(data, blobs(64, seed=1, shape=(1, 6, 6)))
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_rotation_needs_square_images():
    encoder = build_encoder(ModelConfig(name="mlp"), [5])
    with pytest.raises(ConfigError, match="needs square images"):
        pretraining_setup(PretrainConfig(objective="rotation"), encoder, [5], 16)


def test_augmentation_shifts_images_and_is_seeded():
    x = torch.rand(4, 1, 8, 8)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def curve(train, val, metric=None):
    metric = metric or [0.5 + 0.01 * i for i in range(len(train))]
    return [
        {"epoch": i + 1, "train_loss": t, "val_loss": v, "val_metric": m}
        for i, (t, v, m) in enumerate(zip(train, val, metric, strict=True))
    ]


@pytest.mark.parametrize(
    ("history", "baseline", "state"),
    [
        (curve([2.0, 1.0, 0.5, 0.3, 0.2, 0.15], [2.0, 1.1, 0.6, 0.4, 0.3, 0.25]), None, "healthy"),
        (
            curve([2.2, 2.1, 2.05, 2.0, 1.98, 1.97], [2.2, 2.1, 2.1, 2.0, 2.0, 2.0]),
            None,
            "underfitting",
        ),
        (
            curve([2.0, 1.0, 0.3, 0.1, 0.05, 0.02], [2.0, 1.1, 0.8, 1.0, 1.3, 1.6]),
            None,
            "overfitting",
        ),
        (
            curve([2.0, 1.4, 1.39, 1.39, 1.39, 1.39], [2.0, 1.4, 1.4, 1.4, 1.4, 1.4]),
            0.3,
            "optimization",
        ),
        (curve([2.0, 0.8, 1.9, 0.7, 2.1, 0.6, 1.8, 0.9], [1.0] * 8), None, "instability"),
        (
            curve([2.0, 1.0, 0.8, 0.6, 0.5, 0.4], [2.0, 1.2, 1.0, 0.9, 0.85, 0.8], [0.5] * 6),
            None,
            "loss_metric_mismatch",
        ),
    ],
)
def test_learning_curve_diagnosis(history, baseline, state):
    diagnosis = diagnose(history, chance_loss=math.log(10), baseline_train_loss=baseline)
    assert diagnosis.state == state, diagnosis.evidence


def test_worse_than_linear_baseline_is_flagged():
    data = blobs()
    baseline = linear_baseline_train_loss(data.x, data.y, 3)
    assert 0.0 < baseline < math.log(3)
    history = curve([1.5, 1.2, 1.1, 1.0, 1.0, 1.0], [1.5, 1.2, 1.1, 1.0, 1.0, 1.0])
    diagnosis = diagnose(history, chance_loss=math.log(3), baseline_train_loss=baseline)
    assert diagnosis.worse_than_linear_baseline
    # The verdict "worse than linear" is the gate's (on test); the curve line never contradicts it.
    assert "linear" not in diagnosis.summary_line()


def test_auto_model_is_a_cnn_for_images_and_an_mlp_for_tables():
    from trainpipe.models.encoders import CNNEncoder, MLPEncoder

    assert isinstance(build_encoder(ModelConfig(), [1, 8, 8]), CNNEncoder)
    assert isinstance(build_encoder(ModelConfig(), [6]), MLPEncoder)
