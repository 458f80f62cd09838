"""Training throughput in tokens/s and model FLOPs utilization (MFU).

MFU = achieved model FLOPs per second / the device's peak dense bf16 FLOPs, with the model's
FLOPs per token from :meth:`trainpipe.models.lm.TransformerLM.flops_per_token` (6N plus
attention). Peaks are the vendors' dense (no sparsity) bf16 tensor-core figures; a device not
in the table, and any CPU, has no MFU (reported as None, "n/a" in logs).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch

PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    # Matched in order against torch.cuda.get_device_name(); more specific names first.
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
]


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of ``device``, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment in name:
            return tflops * 1e12
    return None


@dataclass
class ThroughputMeter:
    """Called after every optimizer step; every ``every_steps`` it logs and records tokens/s,
    MFU and the mean training loss over the steps since the last record, with the tokens seen
    so far (a learning curve in tokens)."""

    tokens_per_step: int
    flops_per_token: float
    peak_flops_per_s: float | None
    every_steps: int = 10
    stage: str = "lm"
    log: bool = True
    records: list[dict] = field(default_factory=list)
    _mark: float = field(default_factory=time.perf_counter)
    _steps: int = 0
    _losses: list[float] = field(default_factory=list)

    def step(self, step: int, loss: float | None = None) -> None:
        self._steps += 1
        if loss is not None:
            self._losses.append(loss)
        if self._steps < self.every_steps:
            return
        now = time.perf_counter()
        tokens_per_s = self._steps * self.tokens_per_step / max(now - self._mark, 1e-9)
        record = {
            "step": step + 1,
            "tokens": (step + 1) * self.tokens_per_step,
            "train_loss": sum(self._losses) / len(self._losses) if self._losses else None,
            "tokens_per_s": tokens_per_s,
            "mfu": self.mfu(tokens_per_s),
        }
        self.records.append(record)
        if self.log:
            mfu = "n/a" if record["mfu"] is None else f"{record['mfu']:.1%}"
            print(
                f"[{self.stage}] step {step + 1} tokens/s {tokens_per_s:,.0f} mfu {mfu}",
                file=sys.stderr,
                flush=True,
            )
        self._mark, self._steps, self._losses = now, 0, []

    def mfu(self, tokens_per_s: float) -> float | None:
        if self.peak_flops_per_s is None:
            return None
        return tokens_per_s * self.flops_per_token / self.peak_flops_per_s

    def summary(self) -> dict:
        """Median tokens/s and MFU over the records (the first, with warm-up, left out when
        there are others)."""
        rates = sorted(r["tokens_per_s"] for r in self.records[1:] or self.records)
        if not rates:
            return {"tokens_per_s": None, "mfu": None}
        median = rates[len(rates) // 2]
        return {"tokens_per_s": median, "mfu": self.mfu(median)}
