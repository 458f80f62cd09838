#!/usr/bin/env bash
# Every GPU check in one command, for a machine with an NVIDIA GPU (CPU-only CI skips them):
#   bash scripts/gpu_checks.sh [--quick]
# 1. the CUDA tests (tests/gpu): bf16 autocast training with fused AdamW, flash attention
#    through SDPA, activation checkpointing, NCCL DDP and FSDP2 with world size 1,
#    torch.compile (with its eager fallback tested on CPU in tests/unit/test_lm.py), and
#    tokens/s + MFU logged by a pretraining run; the table stages (validate -> pretrain in bf16
#    -> finetune in fp16 with loss scaling -> evaluate -> export -> gate) on CUDA, from one file
#    and from streamed shards (pinned-memory batches);
# 2. python -m benchmarks.trainer --device cuda --precision bf16 (the table Trainer vs a bare
#    loop: samples/s and ratio).
# 3. python -m benchmarks.lm --device cuda (GPT-2-124M shape, bf16, compiled, Trainer vs bare
#    loop in ABBA rounds: tokens/s, MFU, ratio, goal_met and goal_mfu_met).
# Exit 0: every check ran and passed; 1: a test or a benchmark failed; 2: no CUDA GPU.
# Writes gpu_checks/{pytest.txt,lm_benchmark.json,trainer_benchmark.json} (or under $OUT when
# set) and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_checks}"
mkdir -p "$out"
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_checks: no CUDA GPU is visible to torch; run this on a machine with an NVIDIA GPU" >&2
  exit 2
fi
python -c 'import torch; print("gpu:", torch.cuda.get_device_name(0), "torch", torch.__version__)'
status=0
python -m pytest tests/gpu -q -rs -p no:cacheprovider --durations=20 2>&1 | tee "$out/pytest.txt" || status=1
bench_args=(--device cuda --batch 16)  # 16 x 1024 tokens per step: enough work per step for an H100/H200
if [[ "${1:-}" == "--quick" ]]; then bench_args+=(--steps 10 --rounds 2); fi
python -m benchmarks.trainer --device cuda --precision bf16 2>"$out/trainer_benchmark.log" \
  | tail -n 1 | tee "$out/trainer_benchmark.json" || status=1
python -m benchmarks.lm "${bench_args[@]}" 2>"$out/lm_benchmark.log" | tail -n 1 \
  | tee "$out/lm_benchmark.json" || status=1
exit "$status"
