"""A registered text classifier in the language-model DAG's shared steps: the deploy check (the
real server on the package takes the test texts as OIP BYTES; it passes when the served labels
reach evaluation's accuracy and fails with one line when they do not) and lm_evaluate's
scoring of a text champion."""

from __future__ import annotations

import numpy as np
import pytest

from trainpipe.data.text import TextDataConfig, read_corpus
from trainpipe.deploy.config import DeployConfig
from trainpipe.deploy.text_check import text_infra_check
from trainpipe.errors import DeployError
from trainpipe.export.text import export_text_package
from trainpipe.models.lm import LMConfig
from trainpipe.storage import open_store
from trainpipe.train.lm import (
    LMPretrainConfig,
    TextFinetuneConfig,
    finetune_text_classifier,
    pretrain_language_model,
)

TEXT = {"source": "builtin:reviews", "vocab_size": 200, "seq_len": 24, "tokenizer": "wordpiece"}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    train = {"batch_size": 32, "device": "cpu", "lr": 1e-2}
    lm = pretrain_language_model(
        TextDataConfig(**TEXT),
        LMConfig(kind="masked", dim=32, depth=1, heads=2, max_seq_len=32),
        LMPretrainConfig(epochs=1, **train),
    )
    labelled = TextDataConfig(**TEXT, label_column="label")
    out = finetune_text_classifier(
        lm.model, lm.tokenizer, labelled, TextFinetuneConfig(epochs=4, **train)
    )
    store = open_store(tmp_path_factory.mktemp("store").as_uri())
    uri, _ = export_text_package(
        out.model,
        lm.tokenizer,
        store,
        "registry/reviews/versions/1",
        name="reviews",
        version="1",
        labels=out.label_names,
        max_seq_len=32,
        check_ids=out.splits["test"].x,
    )
    corpus = read_corpus(labelled)
    labels = np.array([out.label_names.index(v) for v in corpus.labels["test"]])
    return uri, corpus.test, labels, out.test_accuracy


CHECK = DeployConfig(latency_requests=5, accuracy_tolerance=0.05)


def test_text_check_passes_and_reports_labels_and_latency(package):
    uri, texts, labels, accuracy = package
    record = text_infra_check(uri, texts, labels, accuracy, CHECK)
    assert record["served_accuracy"] == pytest.approx(accuracy, abs=0.05)
    assert record["test_examples"] == len(texts)
    assert set(record["predictions"]) <= {"negative", "positive"}
    assert len(record["predictions"]) == CHECK.smoke_examples
    assert record["max_abs_error_vs_package"] < 1e-5
    assert record["latency"]["requests"] == 5 and record["latency"]["p99_ms"] > 0


def test_text_check_fails_when_the_package_is_not_the_evaluated_model(package):
    uri, texts, labels, accuracy = package
    assert accuracy >= 0.7  # so flipped labels are far from it
    flipped = 1 - labels  # what another model, evaluated on these texts, would have scored
    with pytest.raises(DeployError) as failed:
        text_infra_check(uri, texts, flipped, accuracy, CHECK)
    message = str(failed.value)
    assert message.startswith("deploy error: infrastructure check of reviews version 1 failed")
    assert "the package does not serve the evaluated model; not rolled out" in message
    assert "\n" not in message


def test_a_text_champion_is_scored_on_the_same_texts_through_its_own_tokenizer(package, tmp_path):
    """lm_evaluate's champion: the registered model.onnx run on the raw test texts through the
    version's tokenizer.json (so a retrained tokenizer still compares); other labels make it
    incomparable, with the reason."""
    from trainpipe.artifacts import ArtifactSet
    from trainpipe.export.onnx_export import ort_session
    from trainpipe.registry import Registry
    from trainpipe.serve.text import TextFrontend, TextSpec
    from trainpipe.stages.lm_evaluate import text_champion

    uri, texts, labels, accuracy = package
    exported = ArtifactSet.open(uri)
    registry = Registry(open_store(tmp_path.as_uri()), "reviews")
    files = {name: exported.get_bytes(name) for name in exported.names()}
    registry.promote(registry.register(files, run_id="r1", lineage={}, summary={}), reason="t")

    champion, probs = text_champion(registry, ["negative", "positive"], texts)
    assert champion.comparable and champion.version == "1"
    metadata = exported.get_json("model.json")
    frontend = TextFrontend(
        TextSpec.from_json(metadata["text"], uri),
        exported.get_bytes("tokenizer.json"),
        tuple(metadata["labels"]),
        uri,
    )
    expected = ort_session(exported.get_bytes("model.onnx")).run(
        ["logits"], {"input": frontend.encode(np.array(texts))}
    )[0]
    np.testing.assert_array_equal(probs.argmax(1), expected.argmax(1))
    assert float((probs.argmax(1) == labels).mean()) == pytest.approx(accuracy, abs=0.05)

    other, none = text_champion(registry, ["bad", "good"], texts)
    assert none is None and not other.comparable
    assert other.why_not == (
        "it predicts labels ['negative', 'positive'], the test data has ['bad', 'good']"
    )
