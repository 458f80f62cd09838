"""A user's Hugging Face checkpoint: a tiny randomly initialized BERT saved with
save_pretrained (nothing downloaded), read from the loopback S3 server, fine-tuned (full and
LoRA through peft) by the one Trainer, exported to ONNX with dynamic sequence length."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainpipe.data.text import TextDataConfig, read_corpus, train_tokenizer  # noqa: E402
from trainpipe.errors import DataError  # noqa: E402
from trainpipe.export.onnx_export import check_parity, export_token_onnx  # noqa: E402
from trainpipe.models.hf import load_hf_classifier  # noqa: E402
from trainpipe.storage import open_store  # noqa: E402
from trainpipe.train.lm import TextFinetuneConfig, finetune_hf_classifier  # noqa: E402

TEXT = {"source": "builtin:reviews", "label_column": "label", "seq_len": 24}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """What a user has after save_pretrained: config.json, model.safetensors, tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    cfg = TextDataConfig(source="builtin:reviews", tokenizer="wordpiece", vocab_size=200)
    backend = train_tokenizer(read_corpus(cfg).train, cfg)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", mask_token="<mask>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def s3_checkpoint(checkpoint_dir, s3_bucket, s3_endpoint):
    store = open_store(f"{s3_bucket}/ckpt", endpoint_url=s3_endpoint)
    for path in checkpoint_dir.iterdir():
        store.put_file(path.name, path)
    return f"{s3_bucket}/ckpt"


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_hf_checkpoint_from_s3_fine_tunes(s3_checkpoint, s3_endpoint, strategy):
    cfg = TextFinetuneConfig(epochs=5, batch_size=32, lr=5e-3, device="cpu", strategy=strategy)
    out, _ = finetune_hf_classifier(
        s3_checkpoint, TextDataConfig(**TEXT), cfg, endpoint_url=s3_endpoint
    )
    history = out.result.history
    assert history[-1].val_loss < history[0].val_loss
    total = sum(p.numel() for p in out.model.parameters())
    # The merged model predicts what the trained one did on validation at the epoch whose
    # weights the Trainer kept (early stopping may restore an earlier, better epoch).
    validation = out.splits["validation"]
    with torch.inference_mode():
        merged = out.model(torch.as_tensor(validation.x)).argmax(1).numpy()
    accuracy = np.mean(merged == validation.y)
    assert any(accuracy == pytest.approx(record.val_metric) for record in history)
    if strategy == "lora":
        # peft trains adapters and the head only, then merges: no LoRA modules remain. (A
        # random base is no pretrained model, so accuracy is not the point here.)
        assert out.trainable_params < total / 5
        assert not any("lora" in name for name, _ in out.model.named_parameters())
    else:
        assert out.trainable_params == total
        assert out.test_accuracy >= 0.7, out.test_accuracy


def test_hf_classifier_exports_with_dynamic_sequence(checkpoint_dir):
    model, tokenizer = load_hf_classifier(checkpoint_dir.as_uri(), num_labels=2)
    onnx_bytes = export_token_onnx(model, max_seq_len=64, opset=18)
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 6), (3, 20)]:
        ids = rng.integers(5, 100, (batch, seq)).astype(np.int64)
        ids[0, seq // 2 :] = tokenizer.pad_token_id
        assert check_parity(onnx_bytes, model, ids, atol=1e-4, rtol=1e-3)["examples"] == batch


def test_pickled_checkpoint_is_refused_with_the_fix(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(DataError, match=r"safe_serialization=True"):
        load_hf_classifier(tmp_path.as_uri(), num_labels=2)


def test_hf_checkpoint_through_the_command_is_served_text_in_label_out(
    s3_checkpoint, s3_endpoint, tmp_path, capsys
):
    import json

    import httpx

    from trainpipe.serve import ServeConfig, start_in_background
    from trainpipe.stages.language_model import main

    args = [
        "--run-id",
        "hf1",
        "--set",
        f"storage.uri=file://{tmp_path}",
        "--set",
        f"hf_checkpoint_uri={s3_checkpoint}",
        "--set",
        f"storage.endpoint_url={s3_endpoint}",
        "--set",
        "finetune.strategy=full",
        "--set",
        "finetune.epochs=3",
        "--set",
        "classifier_text.seq_len=24",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    # The shipped tokenizer has none of training's fixed-length padding (to seq_len 24): a
    # short text stays short, so the server pads each batch to its longest text.
    from tokenizers import Tokenizer

    shipped = open_store(summary["package_uri"]).get_bytes("tokenizer.json").decode()
    tokenizer = Tokenizer.from_str(shipped)
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert len(tokenizer.encode("a").ids) < 24
    config = ServeConfig(port=0, log_level="warning", max_batch_size=8)
    with start_in_background(summary["package_uri"], config) as running:
        body = {
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b c d"]}]
        }
        response = httpx.post(f"{running.url}/v2/models/text-classifier/infer", json=body)
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs["label"]["data"]) <= {"negative", "positive"}
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(2, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_hf_classifier_checkpoint_round_trips_without_the_checkpoint(checkpoint_dir):
    """model.pt of the LM DAG's fine-tune step rebuilds the classifier from its stored config
    (nothing read from the checkpoint folder, weights_only loading)."""
    from trainpipe.models.checkpoint import from_bytes, to_bytes
    from trainpipe.models.text_checkpoint import load_text_classifier, text_classifier_payload

    model, tokenizer = load_hf_classifier(checkpoint_dir.as_uri(), num_labels=3)
    model.eval()
    loaded = load_text_classifier(from_bytes(to_bytes(text_classifier_payload(model, list("abc")))))
    ids = torch.tensor([[5, 6, 7, tokenizer.pad_token_id], [8, 9, 10, 11]])
    with torch.inference_mode():
        assert torch.equal(model(ids), loaded(ids))


def test_lm_dag_steps_fine_tune_a_hf_checkpoint_without_pretraining(checkpoint_dir, tmp_path):
    """The LM DAG's steps with language_model.hf_checkpoint_uri: lm_data stores no tokenizer,
    lm_finetune starts from the checkpoint, lm_export ships the checkpoint's tokenizer, and
    the shared gate, register and deploy take the package (deploy: the real server)."""
    from trainpipe.artifacts import ArtifactSet
    from trainpipe.config import load_config
    from trainpipe.stages.deploy import run_deploy
    from trainpipe.stages.gate import run_gate
    from trainpipe.stages.lm_data import run_lm_data
    from trainpipe.stages.lm_evaluate import run_lm_evaluate
    from trainpipe.stages.lm_export import run_lm_export
    from trainpipe.stages.lm_finetune import run_lm_finetune
    from trainpipe.stages.register import run_register

    cfg = load_config(
        None,
        [
            f"storage.uri={tmp_path.as_uri()}",
            "language_model.enabled=true",
            f"language_model.hf_checkpoint_uri={checkpoint_dir.as_uri()}",
            "language_model.classifier_text.seq_len=24",
            "language_model.finetune.strategy=full",
            "language_model.finetune.epochs=1",
            "language_model.finetune.lr=1e-3",
            "gate.bootstrap_resamples=0",
            "gate.min_value=0.0",
            "deploy.latency_requests=5",
        ],
    ).to_json()
    run, data_uri = run_lm_data(cfg, "hf-run")
    assert not (tmp_path / "runs/hf-run/lm_data/tokenizer.json").exists()
    finetune_uri = run_lm_finetune(cfg, run, data_uri, "")
    evaluate_uri = run_lm_evaluate(cfg, run, data_uri, finetune_uri)
    assert evaluate_uri.endswith("/evaluate")
    package = run_lm_export(cfg, run, finetune_uri)
    decision, gate_uri = run_gate(cfg, run, evaluate_uri, package)
    assert decision == "promote"  # gate.min_value 0.0: the first model of this registry
    version_uri = run_register(cfg, run, package, evaluate_uri, gate_uri)
    deployed = ArtifactSet.open(run_deploy(cfg, run, version_uri, data_uri))
    # The real server tokenized the test texts with the checkpoint's tokenizer and answered
    # what the package's model.onnx answers in-process.
    assert deployed.summary["test_examples"] == 34
    assert deployed.summary["max_abs_error_vs_package"] < 1e-5
    metadata = open_store(package).get_json("model.json")
    assert metadata["text"]["cls_id"] is None  # the tokenizer's post-processor adds [CLS]
    shipped = json.loads((tmp_path / "runs/hf-run/export_onnx/tokenizer.json").read_text())
    original = json.loads((checkpoint_dir / "tokenizer.json").read_text())
    assert shipped["model"] == original["model"]
    # Training's fixed-length padding is not shipped: the server pads to the longest text.
    assert shipped["padding"] is None and shipped["truncation"] is None
