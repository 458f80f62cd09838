"""Text in, label out: a text classifier fine-tuned from a tiny pretrained LM, exported with
its tokenizer, served by the real server, queried with tritonclient (BYTES, JSON and binary)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

from trainpipe.data.text import TextDataConfig, synthetic_reviews
from trainpipe.export.text import export_text_package
from trainpipe.models.lm import LMConfig
from trainpipe.serve import ServeConfig, start_in_background
from trainpipe.storage import open_store
from trainpipe.train.lm import (
    LMPretrainConfig,
    TextFinetuneConfig,
    finetune_text_classifier,
    pretrain_language_model,
)

MODEL = "reviews"
TEXT = {"source": "builtin:reviews", "vocab_size": 200, "seq_len": 24}


@pytest.fixture(scope="module")
def classifier():
    model_cfg = LMConfig(kind="masked", dim=32, depth=1, heads=2, max_seq_len=32)
    train = {"batch_size": 32, "device": "cpu", "lr": 1e-2}
    lm = pretrain_language_model(
        TextDataConfig(**TEXT, tokenizer="wordpiece"),
        model_cfg,
        LMPretrainConfig(epochs=1, **train),
    )
    labelled = TextDataConfig(**TEXT, tokenizer="wordpiece", label_column="label")
    out = finetune_text_classifier(
        lm.model, lm.tokenizer, labelled, TextFinetuneConfig(epochs=6, **train)
    )
    return out, lm.tokenizer


@pytest.fixture(scope="module")
def server(classifier, tmp_path_factory) -> Iterator[str]:
    out, tokenizer = classifier
    store = open_store(f"file://{tmp_path_factory.mktemp('store')}")
    uri, reports = export_text_package(
        out.model,
        tokenizer,
        store,
        "registry/reviews/versions/1",
        name=MODEL,
        version="1",
        labels=out.label_names,
        max_seq_len=32,
        check_ids=out.splits["test"].x,
    )
    assert [r["prediction_agreement"] for r in reports] == [1.0, 1.0]
    config = ServeConfig(port=0, log_level="warning", max_batch_size=64)
    with start_in_background(uri, config) as running:
        yield running.url


def torch_probabilities(classifier, texts: list[str]) -> np.ndarray:
    out, tokenizer = classifier
    ids = [[tokenizer.token_to_id("<cls>"), *e.ids][:32] for e in tokenizer.encode_batch(texts)]
    with torch.inference_mode():
        return np.stack(
            [torch.softmax(out.model(torch.tensor([row])), 1)[0].numpy() for row in ids]
        )


def test_text_in_label_out_with_tritonclient(server, classifier):
    tritonclient_http = pytest.importorskip("tritonclient.http")
    texts, labels = synthetic_reviews(40, seed=7)
    texts[0] = "short"  # lengths differ within the batch: padded to the longest
    triton = tritonclient_http.InferenceServerClient(server.removeprefix("http://"))
    expected = torch_probabilities(classifier, texts)
    for binary in (False, True):
        tensor = tritonclient_http.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
        requested = [
            tritonclient_http.InferRequestedOutput(name, binary_data=binary)
            for name in ("label", "probabilities")
        ]
        result = triton.infer(MODEL, [tensor], outputs=requested)
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        probabilities = result.as_numpy("probabilities")
        # Batched and padded on the server == one text at a time in torch.
        np.testing.assert_allclose(probabilities, expected, atol=1e-4)
        assert got == [["negative", "positive"][i] for i in expected.argmax(1)]
        assert np.mean([g == want for g, want in zip(got[1:], labels[1:], strict=True)]) >= 0.8
    triton.close()


def test_text_request_errors_are_4xx_json(server):
    url = f"{server}/v2/models/{MODEL}/infer"
    wrong_type = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    response = httpx.post(url, json=wrong_type)
    assert response.status_code == 400 and "BYTES" in response.json()["error"]
    ok = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    body = httpx.post(url, json=ok).json()
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities", "logits"]
    assert body["outputs"][0]["data"][0] in ("negative", "positive")
