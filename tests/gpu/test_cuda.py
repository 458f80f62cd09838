"""CUDA checks: bf16 language-model training with fused AdamW, flash attention through SDPA,
activation checkpointing, NCCL DDP and FSDP2 with world size 1, torch.compile, and tokens/s
with MFU from a pretraining run, all through the one Trainer. Skipped (not failed) without a
CUDA GPU; run them on a GPU machine with ``bash scripts/gpu_checks.sh``."""

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
    from torch.distributed.fsdp import FSDPModule

    trainer, result = train_lm(world=nccl_world, parallelism="fsdp")
    assert isinstance(trainer.model, FSDPModule)
    assert all(isinstance(block, FSDPModule) for block in trainer.model.layers)
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7
    state = trainer.full_state_dict()
    assert state["embed.weight"].shape == (VOCAB, 64) and state["embed.weight"].device.type == "cpu"
    plain = trainer.plain_model()
    assert not isinstance(plain, FSDPModule)
    torch.testing.assert_close(plain.state_dict()["embed.weight"], state["embed.weight"])


def test_flash_attention_serves_the_causal_model_in_bf16():
    """With SDPA restricted to the flash kernel, a bf16 forward and backward of the causal
    model must run: it would raise if the attention call could not use flash attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = TransformerLM(LMConfig(dim=128, depth=2, heads=2, max_seq_len=SEQ), VOCAB).cuda()
    ids = torch.as_tensor(counting_tokens(8, 0).x[:, :-1]).cuda()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(ids).float().logsumexp(-1).mean()
    loss.backward()
    assert model.embed.weight.grad is not None and torch.isfinite(model.embed.weight.grad).all()


def test_activation_checkpointing_trains_on_cuda():
    torch.manual_seed(0)
    cfg = LMConfig(dim=64, depth=2, heads=4, max_seq_len=SEQ, activation_checkpointing=True)
    model = TransformerLM(cfg, VOCAB)
    train = LMPretrainConfig(epochs=3, batch_size=32, lr=3e-3, device="cuda", precision="bf16")
    result = Trainer(train, model, CausalLM(), stage="gpu").fit(
        counting_tokens(512, 0), counting_tokens(64, 1)
    )
    assert result.history[-1].val_loss < result.history[0].val_loss * 0.7


def test_pretraining_logs_tokens_per_second_and_mfu():
    from trainpipe.data.text import TextDataConfig
    from trainpipe.train.lm import pretrain_language_model

    lm = pretrain_language_model(
        TextDataConfig(vocab_size=300, seq_len=64),
        LMConfig(dim=64, depth=2, heads=4, max_seq_len=64),
        LMPretrainConfig(
            epochs=1, batch_size=32, lr=3e-3, device="cuda", precision="bf16", log_every_steps=10
        ),
    )
    records = lm.throughput["records"]
    assert records and all(r["tokens_per_s"] > 0 for r in records)
    print(f"tokens/s {lm.throughput['tokens_per_s']:.0f} mfu {lm.throughput['mfu']}")
    if peak_flops(torch.device("cuda", 0)) is not None:
        assert 0 < lm.throughput["mfu"] < 1


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
