"""Language-model throughput: a GPT-2-124M-shaped causal LM on synthetic tokens, trained by
trainpipe's Trainer and by a bare PyTorch loop with the same model, precision, optimizer and
compile settings, in one process.

    python -m benchmarks.lm [--device cuda] [--quick] [--precision bf16|fp32] [--no-compile]
                            [--batch N] [--steps N] [--rounds N]

Fairness: both sides run the same number of optimizer steps over the same tokens, with the same
fused AdamW groups, warmup+cosine schedule, clipping, losses read back from the device every
``loss_readback_every_steps`` (10) steps in one sync, and one validation batch (loss and token
accuracy) at the end of each pass; each side keeps its own (compiled) model across rounds, so
compilation is paid once in an untimed warm-up round; rounds alternate ABBA
(:mod:`benchmarks.paired`). ``--quick`` shrinks the model (CPU smoke run, 8 rounds of 8 steps);
the full shape is GPT-2 small (768 wide, 12 blocks, 12 heads, vocabulary 50304, 1024 tokens).
Prints one JSON object on its last line: tokens/s (min/median/max) and MFU of each side, the
per-round ratios, ``ratio`` (their median), ``goal_met`` (ratio >= 0.95) and, on a GPU in the
peak table, ``goal_mfu_met`` (Trainer MFU >= 45%).
"""

from __future__ import annotations

import argparse
import json
import math
import platform

import numpy as np
import torch

from benchmarks.paired import alternate, clocks, elapsed, summary
from trainpipe.data.datasets import Split
from trainpipe.models.lm import LMConfig, TransformerLM
from trainpipe.train.lm import compile_with_fallback
from trainpipe.train.lm_objectives import CausalLM
from trainpipe.train.optim import build_optimizer
from trainpipe.train.schedule import get_lr
from trainpipe.train.throughput import peak_flops
from trainpipe.train.trainer import Trainer

FULL = {"dim": 768, "depth": 12, "heads": 12, "vocab": 50304, "seq_len": 1024, "batch": 8}
QUICK = {"dim": 128, "depth": 2, "heads": 4, "vocab": 4096, "seq_len": 128, "batch": 8}


def tokens(n: int, seq_len: int, vocab: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, vocab, (n, seq_len + 1)), np.zeros(n, dtype=np.int64))


def make_model(shape: dict, device: torch.device, compile_model: bool) -> TransformerLM:
    torch.manual_seed(0)
    cfg = LMConfig(
        dim=shape["dim"], depth=shape["depth"], heads=shape["heads"], max_seq_len=shape["seq_len"]
    )
    model = TransformerLM(cfg, shape["vocab"]).to(device)
    if compile_model:
        example = torch.zeros(1, shape["seq_len"], dtype=torch.int64)
        if not compile_with_fallback(model, example, "bench"):
            raise SystemExit("torch.compile failed; rerun with --no-compile")
    return model


class Bare:
    """What a careful person writes by hand around the same model."""

    def __init__(self, model, cfg, device: torch.device, dtype):
        self.model, self.cfg, self.device, self.dtype = model, cfg, device, dtype

    def run(self, train: Split, validation: Split) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        optimizer = build_optimizer(model, cfg)  # fresh per round, as each Trainer builds one
        x = torch.as_tensor(train.x, device=self.device)
        val = torch.as_tensor(validation.x, device=self.device)
        total = math.ceil(len(x) / cfg.batch_size) * cfg.epochs
        warmup = int(cfg.warmup_fraction * total)
        generator = torch.Generator().manual_seed(0)
        step, losses = 0, []
        started = clocks()
        for _ in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator).to(self.device)
            for start in range(0, len(x), cfg.batch_size):
                batch = x[order[start : start + cfg.batch_size]]
                lr = get_lr(
                    step, peak_lr=cfg.lr, total_steps=total, warmup_steps=warmup, schedule="cosine"
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(
                    self.device.type, dtype=self.dtype, enabled=self.dtype is not None
                ):
                    # The loss inside the compiled forward, as nanoGPT computes it.
                    loss = model(batch[:, :-1], targets=batch[:, 1:])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
                step += 1
                if len(losses) == cfg.loss_readback_every_steps:  # as the Trainer reads back
                    torch.stack(losses).tolist()
                    losses = []
            if losses:
                torch.stack(losses).tolist()
                losses = []
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None),
            ):
                logits = model(val[:, :-1]).float()
                torch.nn.functional.cross_entropy(logits.flatten(0, 1), val[:, 1:].flatten()).item()
                # The Trainer reports validation token accuracy too.
                (logits.argmax(-1) == val[:, 1:]).float().mean(1).sum().item()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return elapsed(started)


def trainer_run(model, cfg, train: Split, validation: Split) -> dict[str, float]:
    trainer = Trainer(cfg, model, CausalLM(), stage="bench")
    started = clocks()
    trainer.fit(train, validation)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return elapsed(started)


def main() -> None:
    from trainpipe.train.lm import LMPretrainConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (even: ABBA)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per optimizer step")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    precision = args.precision or ("bf16" if on_gpu else "fp32")
    compile_model = on_gpu and not args.no_compile
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = {**(QUICK if args.quick else FULL)}
    if args.batch:
        shape["batch"] = args.batch
    steps = args.steps or (8 if args.quick else 30)
    rounds = args.rounds or (8 if args.quick else 4)
    batch, seq_len = shape["batch"], shape["seq_len"]
    train = tokens(batch * steps, seq_len, shape["vocab"], 0)
    validation = tokens(batch, seq_len, shape["vocab"], 1)
    warm = tokens(batch * 3, seq_len, shape["vocab"], 2)
    cfg = LMPretrainConfig(
        epochs=1,
        batch_size=batch,
        lr=6e-4,
        precision=precision,
        device=args.device,
        grad_clip_norm=1.0,
        warmup_fraction=0.1,
    )
    dtype = torch.bfloat16 if precision == "bf16" else None
    bare_model = make_model(shape, device, compile_model)
    ours_model = make_model(shape, device, compile_model)
    bare = Bare(bare_model, cfg, device, dtype)
    bare.run(warm, validation)  # untimed: compilation, allocator, kernel selection
    trainer_run(ours_model, cfg, warm, validation)
    tokens_per_round = len(train) * seq_len
    times = alternate(
        rounds,
        bare=lambda: bare.run(train, validation),
        trainer=lambda: trainer_run(ours_model, cfg, train, validation),
    )
    flops_per_token = bare_model.flops_per_token(seq_len)
    peak = peak_flops(device)

    def mfu(tps: float) -> float | None:
        return None if peak is None else round(tps * flops_per_token / peak, 4)

    clock = "wall" if on_gpu else "cpu"
    paired = summary(times, work=tokens_per_round, goal=0.95, clock=clock)
    bare_median, ours_median = paired["bare"]["median"], paired["trainer"]["median"]
    result = {
        "benchmark": "lm",
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "precision": precision,
        "compile": compile_model,
        "model": {**shape, "params": bare_model.num_params()},
        "flops_per_token": flops_per_token,
        "peak_flops_per_s": peak,
        "steps_per_round": steps,
        "rounds": rounds,
        "bare_tokens_per_s": bare_median,
        "trainer_tokens_per_s": ours_median,
        "bare_mfu": mfu(bare_median),
        "trainer_mfu": mfu(ours_median),
        **{f"tokens_per_s_{side}": paired.pop(side) for side in ("bare", "trainer")},
        **paired,
        "goal_mfu": 0.45 if on_gpu else None,
        "goal_mfu_met": None if not on_gpu or peak is None else mfu(ours_median) >= 0.45,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
