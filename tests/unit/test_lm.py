"""Language models through the one Trainer: losses fall, perplexity and throughput are
reported, attention respects causality and padding, LoRA trains only adapters and merges,
ONNX export keeps batch and sequence length dynamic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainpipe.data.text import TextDataConfig
from trainpipe.export.onnx_export import check_parity, export_token_onnx
from trainpipe.models.lm import LMConfig, TextClassifier, TransformerLM
from trainpipe.models.lora import LoRALinear, apply_lora, merge_lora
from trainpipe.train.lm import (
    LMPretrainConfig,
    TextFinetuneConfig,
    compile_with_fallback,
    finetune_text_classifier,
    pretrain_language_model,
)
from trainpipe.train.throughput import ThroughputMeter

TINY = {"dim": 32, "depth": 2, "heads": 2, "max_seq_len": 64}
REVIEWS = {"source": "builtin:reviews", "vocab_size": 200, "seq_len": 24}


def pretrain_cfg(**overrides) -> LMPretrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 3e-3,
        "device": "cpu",
        "log_every_steps": 5,
        "loss_readback_every_steps": 5,
    }
    return LMPretrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def causal():
    return pretrain_language_model(
        TextDataConfig(**REVIEWS), LMConfig(kind="causal", **TINY), pretrain_cfg()
    )


def test_causal_lm_loss_falls_and_reports_perplexity_throughput_samples(causal):
    history = causal.result.history
    assert history[-1].val_loss < history[0].val_loss - 0.3
    assert history[-1].train_loss < history[0].train_loss
    # The vocabulary has 200 tokens: a model that learned nothing is near perplexity 200.
    assert causal.val_perplexity < 30
    report = causal.report()
    assert report["history"][-1]["val_perplexity"] == pytest.approx(
        np.exp(history[-1].val_loss), rel=1e-6
    )
    assert report["throughput"]["tokens_per_s"] > 0
    assert report["throughput"]["mfu"] is None  # CPU: no peak to compare with
    assert len(report["throughput"]["records"]) >= 2
    assert len(causal.samples) == 2 and all(len(s) > len("The ") for s in causal.samples)


def test_masked_lm_loss_falls_with_wordpiece():
    text = TextDataConfig(**{**REVIEWS, "tokenizer": "wordpiece"})
    cfg = pretrain_cfg(epochs=5, lr=5e-3)
    lm = pretrain_language_model(text, LMConfig(kind="masked", **TINY), cfg)
    history = lm.result.history
    assert history[-1].val_loss < history[0].val_loss - 0.2
    assert history[-1].val_loss < np.log(200) - 1.0  # well below guessing over the vocabulary
    assert lm.samples == []


def test_causal_attention_never_sees_the_future_and_encoder_ignores_padding():
    torch.manual_seed(0)
    causal = TransformerLM(LMConfig(kind="causal", **TINY), 50).eval()
    ids = torch.randint(5, 50, (1, 10))
    changed = ids.clone()
    changed[0, 7] = 5 if ids[0, 7] != 5 else 6
    with torch.no_grad():
        a, b = causal(ids), causal(changed)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-5)
    assert not torch.allclose(a[0, 7:], b[0, 7:], atol=1e-3)

    encoder = TransformerLM(LMConfig(kind="masked", **TINY), 50)
    classifier = TextClassifier(encoder, 3, pad_id=0).eval()
    row = torch.randint(5, 50, (1, 6))
    padded = torch.cat([row, torch.zeros(1, 4, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        assert torch.allclose(classifier(row), classifier(padded), atol=1e-5)


def test_loss_in_the_forward_equals_cross_entropy_of_the_logits():
    """Training computes the loss inside the (compiled) forward; it must be the plain mean
    cross-entropy of the logits, ignoring -100 targets as masked-LM batches mark them."""
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(dim=32, depth=1, heads=2, max_seq_len=16), 50)
    ids = torch.randint(0, 50, (3, 16))
    targets = torch.randint(0, 50, (3, 16))
    targets[0, :5] = -100
    logits = model(ids).float()
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100
    )
    torch.testing.assert_close(model(ids, targets=targets), expected)
    assert model(ids, targets=targets).ndim == 0


def test_throughput_log_interval_must_fall_on_loss_readbacks():
    with pytest.raises(ValueError, match="not a multiple of loss_readback_every_steps 10"):
        LMPretrainConfig(log_every_steps=5, loss_readback_every_steps=10)
    assert LMPretrainConfig(log_every_steps=20, loss_readback_every_steps=10).log_every_steps == 20


def test_flops_per_token_of_a_gpt2_small_shape():
    cfg = LMConfig(dim=768, depth=12, heads=12, max_seq_len=1024)
    with torch.device("meta"):
        model = TransformerLM(cfg, 50304)
    # 12 blocks x (4 x 768^2 attention + 3 x 768 x 2048 SwiGLU) + tied 50304 x 768 embedding.
    expected_params = 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 50304 * 768 + 768
    assert model.num_params() == expected_params
    assert model.flops_per_token(1024) == 6 * expected_params + 12 * 12 * 768 * 1024


def test_throughput_meter_mfu_against_a_peak():
    meter = ThroughputMeter(
        tokens_per_step=1000, flops_per_token=6e6, peak_flops_per_s=1e12, every_steps=2, log=False
    )
    for step in range(6):
        meter.step(step, loss=float(10 - step))
    assert [r["step"] for r in meter.records] == [2, 4, 6]
    assert [r["tokens"] for r in meter.records] == [2000, 4000, 6000]
    assert [r["train_loss"] for r in meter.records] == [9.5, 7.5, 5.5]
    rate = meter.summary()["tokens_per_s"]
    assert meter.summary()["mfu"] == pytest.approx(rate * 6e6 / 1e12)


def test_lora_trains_only_adapters_and_head_then_merges_exactly(causal):
    backbone_before = {k: v.clone() for k, v in causal.model.state_dict().items()}
    cfg = TextFinetuneConfig(
        epochs=8, batch_size=32, lr=1e-2, device="cpu", strategy="lora", lora_rank=4
    )
    text = TextDataConfig(**{**REVIEWS, "label_column": "label"})
    out = finetune_text_classifier(causal.model, causal.tokenizer, text, cfg)
    # The pretrained model itself is left as it was (the stage saves it after fine-tuning).
    assert not any(isinstance(m, LoRALinear) for m in causal.model.modules())
    for key, before in backbone_before.items():
        assert torch.equal(causal.model.state_dict()[key], before), key
    # Trainable: rank-4 A and B on q and v of both blocks (4 x 4 x 32 x 2) plus the head.
    assert out.trainable_params == 2 * 2 * (4 * 32 + 32 * 4) + (32 * 2 + 2)
    merged = out.model
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    state = merged.encoder.state_dict()
    for key, before in backbone_before.items():
        changed = not torch.equal(state[key], before)
        assert changed == key.endswith(("attn.q.weight", "attn.v.weight")), key
    assert out.result.history[-1].val_loss < out.result.history[0].val_loss - 0.1
    assert out.test_accuracy >= 0.7, out.test_accuracy  # chance is 0.5 on ~34 reviews
    assert out.label_names == ["negative", "positive"]


def test_lora_merge_equals_adapted_forward():
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(**TINY), 40)
    wrapped = apply_lora(model, rank=2, alpha=4.0, targets=("q", "down"))
    assert len(wrapped) == 4
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"layers.{i}.{part}.lora_{ab}"
        for i in range(2)
        for part in ("attn.q", "mlp.down")
        for ab in "ab"
    }
    for module in model.modules():
        if isinstance(module, LoRALinear):
            torch.nn.init.normal_(module.lora_b)  # as if trained
    ids = torch.randint(5, 40, (3, 9))
    with torch.no_grad():
        adapted = model(ids)
        merged = merge_lora(model)(ids)
    assert torch.allclose(adapted, merged, atol=1e-5)


def test_onnx_export_keeps_batch_and_sequence_length_dynamic():
    torch.manual_seed(0)
    classifier = TextClassifier(TransformerLM(LMConfig(kind="masked", **TINY), 60), 3, pad_id=0)
    onnx_bytes = export_token_onnx(classifier, max_seq_len=64, opset=18)
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 5), (3, 13), (2, 40)]:
        ids = rng.integers(5, 60, (batch, seq)).astype(np.int64)
        ids[0, seq // 2 :] = 0  # a padded row
        report = check_parity(onnx_bytes, classifier, ids, atol=1e-4, rtol=1e-3)
        assert report["prediction_agreement"] == 1.0


class _Crash(Exception):
    pass


def test_lm_resume_from_checkpoint_is_exact(tmp_path):
    """A run stopped mid-epoch (after step 5, checkpoint at step 3) and resumed ends with the
    same weights, bit for bit, as the run that was never stopped. (The SIGKILL variant for
    classifiers is tests/integration/test_distributed.py; the checkpoint code is shared.)"""
    from trainpipe.data.datasets import Split
    from trainpipe.storage import open_store
    from trainpipe.train.checkpoint import CheckpointStore
    from trainpipe.train.lm_objectives import MaskedLM
    from trainpipe.train.trainer import Trainer

    rng = np.random.default_rng(0)
    data = Split(rng.integers(5, 60, (96, 17)), np.zeros(96, dtype=np.int64))
    val = Split(rng.integers(5, 60, (16, 17)), np.zeros(16, dtype=np.int64))
    cfg = pretrain_cfg(epochs=2, batch_size=16, checkpoint_every_steps=3)

    def fit(store_dir, stop_after_step=None):
        torch.manual_seed(0)
        model = TransformerLM(LMConfig(kind="masked", dropout=0.1, **TINY), 60)

        def hook(step, loss):
            if step == stop_after_step:
                raise _Crash

        trainer = Trainer(
            cfg,
            model,
            MaskedLM(0.15, mask_id=3, vocab_size=60, special_ids=[0, 1, 2, 3, 4]),
            stage="lm",
            checkpoints=CheckpointStore(open_store(str(store_dir)), "run", "lm", keep=2),
            on_step_end=hook,
        )
        result = trainer.fit(data, val)
        return model.state_dict(), result

    straight, first = fit(tmp_path / "a")
    with pytest.raises(_Crash):
        fit(tmp_path / "b", stop_after_step=4)
    resumed, second = fit(tmp_path / "b")
    assert first.resumed_from_step is None and second.resumed_from_step == 3
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_activation_checkpointing_gives_the_same_gradients(monkeypatch):
    import trainpipe.models.lm as lm_module

    checkpointed = []
    real = lm_module.checkpoint

    def counting(*args, **kwargs):
        checkpointed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_module, "checkpoint", counting)
    ids = torch.randint(5, 50, (2, 12))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = TransformerLM(LMConfig(activation_checkpointing=checkpointing, **TINY), 50)
        model(ids).float().pow(2).mean().backward()
        grads.append(model.layers[0].mlp.up.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert len(checkpointed) == TINY["depth"]  # once per block, only when switched on


def test_compile_falls_back_to_eager_when_the_compiler_fails(monkeypatch, capsys):
    def broken_compile(model, **kwargs):
        def run(*args):
            raise RuntimeError("inductor: no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = TransformerLM(LMConfig(**TINY), 40)
    assert not compile_with_fallback(model, torch.ones(1, 4, dtype=torch.int64), "t")
    assert (
        "torch.compile failed (RuntimeError: inductor: no C++ compiler)" in capsys.readouterr().err
    )
    assert model(torch.ones(1, 4, dtype=torch.int64)).shape == (1, 4, 40)  # still eager
