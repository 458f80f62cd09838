"""CUDA checks: bf16 language-model training, NCCL DDP and FSDP2 with world size 1, and
torch.compile, all through the one Trainer. Skipped (not failed) without a CUDA GPU; run them
on a GPU machine with ``bash scripts/gpu_checks.sh``."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from trainpipe.data.datasets import Split
from trainpipe.models.lm import LMConfig, TransformerLM
from trainpipe.train.distributed import World
from trainpipe.train.lm import LMPretrainConfig, compile_with_fallback
from trainpipe.train.lm_objectives import CausalLM
from trainpipe.train.throughput import peak_flops
from trainpipe.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB, SEQ = 256, 64


class OneRankWorld(World):
    """World size 1 that still takes the distributed code path (DDP/FSDP wrapping,
    collectives), so one GPU exercises NCCL."""

    @property
    def distributed(self) -> bool:
        return True


def counting_tokens(n: int, seed: int) -> Split:
    """Sequences that count up from a random start (token t+1 = token t + 1 mod vocabulary):
    a bigram rule a small model learns within a few dozen steps."""
    starts = np.random.default_rng(seed).integers(0, VOCAB, (n, 1))
    x = (starts + np.arange(SEQ + 1)[None, :]) % VOCAB
    return Split(x.astype(np.int64), np.zeros(n, dtype=np.int64))


def train_lm(world=None, **overrides):
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(dim=64, depth=2, heads=4, max_seq_len=SEQ), VOCAB)
    if overrides.pop("compile", False):
        assert compile_with_fallback(model.cuda(), torch.zeros(1, SEQ, dtype=torch.int64), "gpu")
    base = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "device": "cuda", "precision": "bf16"}
    cfg = LMPretrainConfig(**{**base, **overrides})
    trainer = Trainer(cfg, model, CausalLM(), stage="gpu", world=world)
    return trainer, trainer.fit(counting_tokens(512, 0), counting_tokens(64, 1))


@pytest.fixture
def nccl_world():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    yield OneRankWorld()
    dist.destroy_process_group()


def test_bf16_causal_lm_learns_on_cuda():
    trainer, result = train_lm()
    assert trainer.device.type == "cuda"
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7
    assert trainer.optimizer.defaults.get("fused") is True


def test_nccl_ddp_world_size_one(nccl_world):
    trainer, result = train_lm(world=nccl_world)
    assert isinstance(trainer.train_model, torch.nn.parallel.DistributedDataParallel)
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7


def test_fsdp2_world_size_one(nccl_world):
    trainer, result = train_lm(world=nccl_world, parallelism="fsdp")
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7
    state = trainer.full_state_dict()
    assert state["embed.weight"].shape == (VOCAB, 64) and state["embed.weight"].device.type == "cpu"


def test_compiled_model_trains_and_keeps_plain_parameter_names():
    trainer, result = train_lm(compile=True)
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7
    assert "embed.weight" in trainer.full_state_dict()


def test_peak_flops_known_for_this_gpu():
    name = torch.cuda.get_device_name(0)
    peak = peak_flops(torch.device("cuda", 0))
    print(f"{name}: peak bf16 {peak}")
    if any(k in name for k in ("H100", "H200", "A100")):
        assert peak is not None and peak >= 3e14
