"""The language-model DAG's parts that need no pipeline: the gate's perplexity rule, the
``language_model`` config section, the run's stage list, the text classifier checkpoint, and
register/evaluate treating a text package and a text champion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainpipe.config import load_config
from trainpipe.errors import ConfigError, DataError
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.gate import PROMOTE, REJECT, decide, perplexity_bound
from trainpipe.local_run import stages_of
from trainpipe.models.checkpoint import from_bytes, to_bytes
from trainpipe.models.lm import LMConfig, TextClassifier, TransformerLM
from trainpipe.models.text_checkpoint import load_text_classifier, text_classifier_payload
from trainpipe.stages.lm_context import array_bytes

METRICS = {"accuracy": 0.9, "slices": {}, "language_model": {"test_perplexity": 120.0}}
NO_CHAMPION = {"champion": None, "intervals": {}}


def test_perplexity_rule_passes_fails_and_stays_out_when_unset():
    assert perplexity_bound(GateConfig(), METRICS) is None
    assert perplexity_bound(GateConfig(max_perplexity=50.0), {"accuracy": 0.9}) is None
    passed = perplexity_bound(GateConfig(max_perplexity=150.0), METRICS)
    assert passed.passed and passed.values == {
        "metric": "test_perplexity",
        "value": 120.0,
        "max": 150.0,
    }
    failed = perplexity_bound(GateConfig(max_perplexity=100.0), METRICS)
    assert not failed.passed
    assert failed.detail.startswith("the language model did not learn the corpus well enough")
    assert "120.0000 > max 100.0000" in failed.detail


def test_decide_rejects_a_classifier_whose_language_model_is_too_perplexed():
    cfg = GateConfig(min_value=0.5, max_perplexity=100.0)
    decision = decide(cfg, METRICS, NO_CHAMPION)
    assert decision.decision == REJECT
    assert [r.rule for r in decision.rules if not r.passed] == ["max_perplexity"]
    relaxed = cfg.model_copy(update={"max_perplexity": 200.0})
    assert decide(relaxed, METRICS, NO_CHAMPION).decision == PROMOTE


def test_a_key_of_a_language_model_subsection_keeps_its_demo_defaults():
    cfg = load_config(None, ["language_model.model.dim=32", "language_model.pretrain.epochs=1"])
    lm = cfg.language_model
    assert (lm.model.dim, lm.model.depth, lm.model.max_seq_len) == (32, 2, 128)
    assert (lm.pretrain.epochs, lm.pretrain.lr, lm.pretrain.device) == (1, 3e-3, "auto")
    assert lm.finetune.strategy == "lora" and not lm.enabled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["deploy.target=kubernetes", "deploy.service_url=http://x:8080"],
            "does not roll out to a cluster itself yet",
        ),
        (["tune.enabled=true"], "has no tune step"),
        (["language_model.text.seq_len=256"], "text.seq_len 256 exceeds model.max_seq_len 128"),
    ],
)
def test_language_model_dag_refuses_what_it_cannot_do(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["language_model.enabled=true", *overrides])
    load_config(None, overrides)  # the table DAG is unaffected


def test_the_language_model_dag_takes_fsdp2_for_both_training_steps():
    """The steps store what ``Trainer.plain_model()`` gathers, so FSDP2 is allowed."""
    overrides = [
        "language_model.pretrain.parallelism=fsdp",
        "language_model.finetune.parallelism=fsdp",
    ]
    lm = load_config(None, ["language_model.enabled=true", *overrides]).language_model
    assert lm.pretrain.parallelism == lm.finetune.parallelism == "fsdp"


def test_stages_of_the_language_model_run():
    lm = load_config(None, ["language_model.enabled=true"])
    assert stages_of(lm) == (
        "lm_data",
        "lm_pretrain",
        "lm_finetune",
        "evaluate",
        "export_onnx",
        "gate",
        "register",
        "deploy",
    )
    hf = load_config(None, ["language_model.enabled=true", "language_model.hf_checkpoint_uri=x"])
    assert "lm_pretrain" not in stages_of(hf)
    assert stages_of(load_config())[0] == "validate_data"


def test_text_classifier_checkpoint_round_trips_bit_exact():
    torch.manual_seed(0)
    backbone = TransformerLM(LMConfig(dim=16, depth=1, heads=2, max_seq_len=16), 50)
    model = TextClassifier(backbone, 3, pad_id=0).eval()
    data = to_bytes(text_classifier_payload(model, ["a", "b", "c"]))
    loaded = load_text_classifier(from_bytes(data))  # weights_only=True
    ids = torch.tensor(np.random.default_rng(0).integers(1, 50, size=(4, 10)))
    with torch.inference_mode():
        assert torch.equal(model(ids), loaded(ids))
    assert not loaded.training


def test_compile_warns_about_the_language_model_dag_s_local_sources():
    from trainpipe.cluster import cluster_unreadable_paths

    cfg = load_config(
        None,
        [
            "language_model.enabled=true",
            "storage.uri=s3://bucket/ml",
            "language_model.text.source=/home/me/corpus.txt",
            "language_model.classifier_text.source=s3://bucket/reviews.parquet",
        ],
    )
    assert cluster_unreadable_paths(cfg) == ["language_model.text.source '/home/me/corpus.txt'"]
    # builtin: corpora ship with the image; the table DAG's data.source is not read here.
    hf = cfg.model_copy(
        update={"language_model": cfg.language_model.model_copy(update={"hf_checkpoint_uri": "x"})}
    )
    assert cluster_unreadable_paths(hf) == ["language_model.hf_checkpoint_uri 'x'"]


def test_a_bad_language_model_config_is_one_line_and_exit_2(capsys):
    from trainpipe.cli import main

    code = main(
        [
            "run",
            "--set",
            "language_model.enabled=true",
            "--set",
            "language_model.classifier_text.label_column=null",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "trainpipe: config error: language_model: classifier_text.label_column is not set: the "
        "DAG fine-tunes a classifier; name the column of classifier_text.source that holds the "
        "labels"
    ]


def test_lm_data_refuses_a_corpus_too_small_to_split(tmp_path):
    from trainpipe.errors import DataError
    from trainpipe.stages.lm_data import run_lm_data

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one short document.\n\nanother one.\n")
    cfg = load_config(
        None,
        [
            f"storage.uri={tmp_path.as_uri()}/store",
            "language_model.enabled=true",
            f"language_model.text.source={corpus}",
        ],
    )
    with pytest.raises(DataError, match=r"split has no documents \(2 in all\)"):
        run_lm_data(cfg.to_json(), "small")
    assert not (tmp_path / "store" / "runs" / "small" / "lm_data").exists()  # nothing half-written


def test_a_missing_corpus_fails_the_run_before_kfp_starts(tmp_path, capsys):
    from trainpipe.cli import main

    code = main(
        [
            "run",
            "--output",
            str(tmp_path),
            "--set",
            "language_model.enabled=true",
            "--set",
            f"language_model.text.source={tmp_path}/nope.txt",
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"trainpipe: data error: language_model.text.source {tmp_path}/nope.txt does not exist; "
        "give an existing file or folder (file:// or s3://), or a builtin: corpus"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_preflight_finds_s3_corpora_and_shard_folders(s3_bucket, s3_endpoint):
    """On the loopback S3 server, with the endpoint from the config: a file and a folder of
    shards exist, a missing key does not."""
    from trainpipe.errors import DataError
    from trainpipe.stages.lm_data import check_lm_sources
    from trainpipe.storage import open_store

    store = open_store(s3_bucket, endpoint_url=s3_endpoint)
    store.put_bytes("corpus.txt", b"some text\n\nmore text\n")
    store.put_bytes("labelled/part-0.jsonl", b'{"text": "good", "label": "positive"}\n')

    def config(source: str, labelled: str):
        return load_config(
            None,
            [
                f"storage.endpoint_url={s3_endpoint}",
                "language_model.enabled=true",
                f"language_model.text.source={source}",
                f"language_model.classifier_text.source={labelled}",
            ],
        )

    check_lm_sources(config(f"{s3_bucket}/corpus.txt", f"{s3_bucket}/labelled"))
    with pytest.raises(DataError, match=r"^data error: language_model.text.source .* does not"):
        check_lm_sources(config(f"{s3_bucket}/missing.txt", f"{s3_bucket}/labelled"))


def test_lm_data_stores_the_packed_corpus_that_pretraining_trains_on_unread(tmp_path):
    """lm_data tokenizes and packs the pretraining corpus once and stores it with checksums;
    pretraining from it reads no corpus (its source is gone) and trains on exactly those
    windows; a packed file changed after the commit is refused."""
    from tests.integration.test_lm_pipeline import TINY
    from trainpipe.artifacts import ArtifactSet
    from trainpipe.data.text import pack_corpus, read_corpus
    from trainpipe.stages.lm_context import packed_splits, tokenizer_in
    from trainpipe.stages.lm_data import run_lm_data
    from trainpipe.storage import ChecksumMismatch
    from trainpipe.train.lm import PackedText, pretrain_language_model

    tiny = [f"storage.uri={tmp_path.as_uri()}", "language_model.enabled=true", *TINY]
    cfg = load_config(None, tiny)
    _, data_uri = run_lm_data(cfg.to_json(), "packed")
    data = ArtifactSet.open(data_uri)
    lm = cfg.language_model
    tokenizer = tokenizer_in(data)
    stored = packed_splits(data)
    again = pack_corpus(tokenizer, read_corpus(lm.text), lm.text.seq_len, source="again")
    for split, windows in again.items():
        assert stored[split].x.dtype == np.int64
        np.testing.assert_array_equal(stored[split].x, windows.x)
    assert data.summary["pretrain_tokens"]["train"] == len(stored["train"]) * lm.text.seq_len

    gone = lm.text.model_copy(update={"source": f"{tmp_path}/no-such-corpus.txt"})
    result = pretrain_language_model(
        gone, lm.model, lm.pretrain, packed=PackedText(tokenizer, stored)
    )
    assert result.tokens_per_epoch == len(stored["train"]) * lm.text.seq_len
    wider = lm.text.model_copy(update={"seq_len": 48})
    with pytest.raises(DataError, match=r"packed sequences are \[33\] tokens wide, not"):
        pretrain_language_model(wider, lm.model, lm.pretrain, packed=PackedText(tokenizer, stored))

    (tmp_path / "runs/packed/lm_data/packed_train.npy").write_bytes(
        array_bytes(stored["train"].x[:-1].astype(np.int32))
    )
    with pytest.raises(ChecksumMismatch):
        packed_splits(ArtifactSet.open(data_uri))
