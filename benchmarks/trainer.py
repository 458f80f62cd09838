"""Trainer overhead: the same model, data and batches trained by a bare PyTorch loop and by
trainpipe's Trainer, in one process.

    python -m benchmarks.trainer [--quick] [--device cpu|cuda] [--precision fp32|bf16] [--rounds N]

Fairness: both sides do the same work (AdamW over the same decay/no-decay groups, warmup+cosine,
clipping, a logged loss per step, and a validation pass over the same split at every epoch
end); rounds alternate in ABBA order (bare-trainer, trainer-bare, ...) so neither side always
runs first on a warming or cooling machine; both sides run the same number of times
(:mod:`benchmarks.paired`). Prints one JSON object on its last line: samples/s of each side
(min/median/max), the per-round ratios, ``ratio`` (their median: each round's two sides ran
next to each other), the ratio of the medians, and ``goal_met`` (ratio >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import math
import platform

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.paired import alternate, clocks, elapsed, summary
from trainpipe.data.datasets import Split
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.train.config import FinetuneConfig
from trainpipe.train.objectives import Classification
from trainpipe.train.optim import decay_groups
from trainpipe.train.schedule import get_lr
from trainpipe.train.trainer import Trainer


def make_data(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 1, 16, 16), dtype=np.float32) + y[:, None, None, None] / 10
    return Split(x.astype(np.float32), y.astype(np.int64))


def make_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(name="cnn", hidden_dim=48, embed_dim=64, depth=2, dropout=0.0)
    return Classifier(build_encoder(cfg, [1, 16, 16]), 10).to(device)


@torch.no_grad()
def bare_validate(model: nn.Module, validation: Split, device: torch.device, dtype) -> float:
    """The validation pass the Trainer makes at each epoch end: eval mode, batches of 1024."""
    model.eval()
    x = torch.as_tensor(validation.x, device=device)
    y = torch.as_tensor(validation.y, device=device)
    loss_sum = 0.0
    for start in range(0, len(y), 1024):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x[start : start + 1024]).float()
        loss_sum += F.cross_entropy(logits, y[start : start + 1024]).item() * len(logits)
        (logits.argmax(1) == y[start : start + 1024]).sum().item()
    return loss_sum / len(y)


def bare_loop(
    cfg: FinetuneConfig, train: Split, validation: Split, device: torch.device, dtype
) -> dict[str, float]:
    """What a careful person writes by hand: AdamW, warmup+cosine, clipping, autocast, a
    validation pass per epoch."""
    model = make_model(device)
    optimizer = torch.optim.AdamW(decay_groups(model.parameters(), cfg.weight_decay), lr=cfg.lr)
    x = torch.as_tensor(train.x, device=device)
    y = torch.as_tensor(train.y, device=device)
    steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_fraction * total)
    generator = torch.Generator().manual_seed(0)
    step = 0
    started = clocks()
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator).to(device)
        for start in range(0, len(y), cfg.batch_size):
            index = order[start : start + cfg.batch_size]
            lr = get_lr(
                step, peak_lr=cfg.lr, total_steps=total, warmup_steps=warmup, schedule="cosine"
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x[index]).float(), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            loss.item()  # the bare loop logs its loss too
            step += 1
        bare_validate(model, validation, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return elapsed(started)


def trainer_loop(cfg: FinetuneConfig, train: Split, validation: Split, device) -> dict[str, float]:
    trainer = Trainer(cfg, make_model(device), Classification(), stage="bench")
    started = clocks()
    trainer.fit(train, validation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return elapsed(started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (even: ABBA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    n = 1024 if args.quick else 8192
    rounds = args.rounds or 6
    train, validation = make_data(n), make_data(512, seed=1)
    cfg = FinetuneConfig(
        epochs=2, batch_size=128, device=args.device, precision=args.precision, grad_clip_norm=1.0
    )
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    bare_loop(cfg, make_data(256), validation, device, dtype)  # warm-up: allocator, kernels
    trainer_loop(cfg, make_data(256), validation, device)
    times = alternate(
        rounds,
        bare=lambda: bare_loop(cfg, train, validation, device, dtype),
        trainer=lambda: trainer_loop(cfg, train, validation, device),
    )
    clock = "wall" if device.type == "cuda" else "cpu"
    paired = summary(times, work=n * cfg.epochs, goal=0.97, clock=clock)
    result = {
        "benchmark": "trainer",
        "device": str(device),
        "precision": args.precision,
        "examples": n,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "rounds": rounds,
        "bare_samples_per_s": paired["bare"]["median"],
        "trainer_samples_per_s": paired["trainer"]["median"],
        **{f"samples_per_s_{side}": paired.pop(side) for side in ("bare", "trainer")},
        **paired,
        "validation_rows_per_epoch": len(validation),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
