"""One Trainer for pretraining and fine-tuning: seeded, scheduled, clipped, early-stopped.

    trainer = Trainer(cfg.finetune, model, Classification(), stage="finetune")
    result = trainer.fit(train_split, validation_split)
    result.history[-1].val_loss

Data lives in memory as tensors; batches are index slices of a seeded permutation, so the same
seed gives the same run.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from trainpipe.data.datasets import Split
from trainpipe.errors import TrainingError
from trainpipe.train.config import OptimConfig
from trainpipe.train.objectives import Objective
from trainpipe.train.schedule import get_lr


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float
    lr: float
    wall_s: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    samples_per_s: float = 0.0
    wall_s: float = 0.0
    metric_name: str = ""

    def to_dict(self) -> dict:
        return {
            "history": [asdict(r) for r in self.history],
            "best_epoch": self.best_epoch,
            "samples_per_s": self.samples_per_s,
            "wall_s": self.wall_s,
            "metric_name": self.metric_name,
        }


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was requested but no CUDA GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Weight decay on matrices and kernels only: biases and norm scales are not shrunk."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    momentum = 0.0 if cfg.optimizer == "sgd" else 0.9
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=momentum, nesterov=cfg.optimizer == "sgd_nesterov"
    )


class Trainer:
    def __init__(self, cfg: OptimConfig, model: nn.Module, objective: Objective, *, stage: str):
        self.cfg = cfg
        self.stage = stage
        self.objective = objective
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)

    def fit(self, train: Split, validation: Split) -> TrainResult:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        x = torch.as_tensor(train.x, device=self.device)
        y = torch.as_tensor(train.y, device=self.device)
        steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = int(cfg.warmup_fraction * total_steps)
        result = TrainResult(metric_name=self.objective.metric_name)
        best_loss, best_state, stale_epochs = math.inf, None, 0
        started = time.monotonic()
        step = 0
        for epoch in range(1, cfg.epochs + 1):
            epoch_started = time.monotonic()
            self.model.train()
            order = torch.randperm(len(y), generator=generator).to(self.device)
            loss_sum = 0.0
            for start in range(0, len(y), cfg.batch_size):
                index = order[start : start + cfg.batch_size]
                lr = get_lr(
                    step,
                    peak_lr=cfg.lr,
                    total_steps=total_steps,
                    warmup_steps=warmup_steps,
                    schedule=cfg.schedule,
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, _ = self.objective.loss(self.model, x[index], y[index], generator)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{self.stage}: loss became {loss.item()} at step {step} (epoch {epoch}); "
                        f"likely causes: learning rate {cfg.lr} too high, bad initialization, or "
                        "non-finite inputs; lower the learning rate or enable grad clipping"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip_norm is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
                self.optimizer.step()
                loss_sum += loss.item() * len(index)
                step += 1
            val_loss, val_metric = self.evaluate(validation, generator)
            record = EpochRecord(
                epoch=epoch,
                train_loss=loss_sum / len(y),
                val_loss=val_loss,
                val_metric=val_metric,
                lr=lr,
                wall_s=time.monotonic() - epoch_started,
            )
            result.history.append(record)
            self._report(record, time.monotonic() - started)
            if val_loss < best_loss:
                best_loss, result.best_epoch, stale_epochs = val_loss, epoch, 0
                if cfg.early_stopping_patience is not None:
                    best_state = copy.deepcopy(self.model.state_dict())
            else:
                stale_epochs += 1
                if cfg.early_stopping_patience and stale_epochs >= cfg.early_stopping_patience:
                    print(
                        f"[{self.stage}] early stop at epoch {epoch}; restoring epoch "
                        f"{result.best_epoch}",
                        file=sys.stderr,
                    )
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        result.wall_s = time.monotonic() - started
        result.samples_per_s = len(y) * len(result.history) / max(result.wall_s, 1e-9)
        return result

    @torch.no_grad()
    def evaluate(self, split: Split, generator: torch.Generator) -> tuple[float, float]:
        """Mean loss and mean metric over a split, in eval mode."""
        self.model.eval()
        # A fixed generator makes validation masks identical from epoch to epoch.
        eval_generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        x = torch.as_tensor(split.x, device=self.device)
        y = torch.as_tensor(split.y, device=self.device)
        loss_sum, metric_sum = 0.0, 0.0
        for start in range(0, len(y), 1024):
            batch_x, batch_y = x[start : start + 1024], y[start : start + 1024]
            loss, metric = self.objective.loss(self.model, batch_x, batch_y, eval_generator)
            loss_sum += loss.item() * len(batch_y)
            metric_sum += float(metric)
        return loss_sum / len(y), metric_sum / len(y)

    def _report(self, record: EpochRecord, elapsed_s: float) -> None:
        epochs = self.cfg.epochs
        # About ten progress lines per stage: enough to watch, few enough to read.
        if record.epoch % max(1, epochs // 10) and record.epoch != epochs:
            return
        eta_s = elapsed_s / record.epoch * (epochs - record.epoch)
        line = (
            f"[{self.stage}] epoch {record.epoch:>3}/{epochs} "
            f"train_loss {record.train_loss:.4f} val_loss {record.val_loss:.4f} "
            f"{self.objective.metric_name} {record.val_metric:.4f} lr {record.lr:.2e} "
            f"eta {eta_s:.0f}s"
        )
        print(line, file=sys.stderr, flush=True)
