"""What keeps a shipped model at least as good as a linear model: the stratified split that
covers every class, the class-coverage and linear-baseline gate rules on real baselines, the
diagnosis that never contradicts the gate, and the pretrained-vs-scratch choice on validation
(through the real finetune stage)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.digits_model import config_json
from trainpipe.artifacts import ArtifactSet
from trainpipe.data.config import DataConfig
from trainpipe.data.datasets import Dataset, Split, split_indices, with_features
from trainpipe.data.stored import load_validated
from trainpipe.evaluate.baselines import baseline_scores
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.gate import REJECT, decide
from trainpipe.evaluate.metrics import classification_metrics
from trainpipe.models import build_encoder
from trainpipe.models.checkpoint import encoder_payload, from_bytes, load_classifier, to_bytes
from trainpipe.models.config import ModelConfig
from trainpipe.models.heads import Blend
from trainpipe.stages.context import make_context
from trainpipe.stages.evaluate import missing_classes, reconcile_diagnosis, run_evaluate
from trainpipe.stages.finetune import TRAINING_KEYS, choose_initialization, run_finetune
from trainpipe.stages.validate import run_validate
from trainpipe.train.blend import BLEND_GRID
from trainpipe.train.finetuning import auto_batch_size


def blobs(n: int = 600, seed: int = 0) -> Dataset:
    """Three linearly separable classes in 6 dimensions, split by the pipeline's own split."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 6)) + 2.5 * np.eye(3, 6)[y]).astype(np.float32)
    rows = split_indices(DataConfig(), y, 3)
    splits = [Split(x[rows[name]], y[rows[name]]) for name in ("train", "validation", "test")]
    return Dataset(*splits, label_names=["a", "b", "c"], feature_shape=[6], source="blobs")


def test_split_puts_every_class_in_every_split():
    y = np.array([0] * 50 + [1] * 3 + [2] * 7)
    rows = split_indices(DataConfig(split_seed=3), y, 3)
    for name, index in rows.items():
        assert set(y[index]) == {0, 1, 2}, name
    assert sorted(np.concatenate(list(rows.values()))) == list(range(len(y)))


def test_split_keeps_identical_feature_rows_together():
    """A table's own repeated rows (iris has one) go to one split: what the leakage check
    would otherwise refuse as train/test overlap."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    groups = np.arange(300, dtype=np.uint64)
    groups[200:260] = groups[:60]  # 60 rows repeat the features of 60 others
    plain = split_indices(DataConfig(), y, 3)
    grouped = split_indices(DataConfig(), y, 3, groups=groups)
    where = np.empty(300, dtype=np.int64)
    for k, rows in enumerate(grouped.values()):
        where[rows] = k
    assert (where[200:260] == where[:60]).all()
    assert sorted(np.concatenate(list(grouped.values()))) == list(range(300))
    straddling = sum(
        len(np.intersect1d(groups[plain[a]], groups[plain[b]]))
        for a, b in (("train", "test"), ("train", "validation"), ("validation", "test"))
    )
    assert straddling > 0  # the plain split would have leaked
    # Rows without duplicates keep the plain split's assignment.
    for name in plain:
        assert set(plain[name][plain[name] < 60]) == set(grouped[name][grouped[name] < 60])


def test_baselines_and_the_linear_rule():
    data = blobs()
    scores = baseline_scores(data.splits(), data.splits(), 3, categorical=None, top_k=3)
    assert scores["linear"]["accuracy"] > 0.85 and scores["hgb"]["accuracy"] > 0.8
    assert scores["train_examples"] == len(data.train)
    rng = np.random.default_rng(1)
    bad = classification_metrics(data.test.y, rng.normal(size=(len(data.test), 3)), ["a", "b", "c"])
    good = classification_metrics(data.test.y, 5.0 * np.eye(3)[data.test.y], ["a", "b", "c"])
    for metrics in (bad, good):
        metrics |= {"slices": {}, "baselines": scores, "classes_missing_from_test": []}
    cfg = GateConfig(min_value=0.0)
    rejected = decide(cfg, bad, {"champion": None})
    rule = next(r for r in rejected.rules if r.rule == "beats_linear_baseline")
    assert rejected.decision == REJECT and not rule.passed
    assert "worse than a linear model" in rule.detail and "\n" not in rule.detail
    passed = next(r for r in decide(cfg, good, {"champion": None}).rules if r.rule == rule.rule)
    assert passed.passed and passed.values["linear"] == scores["linear"]["accuracy"]
    lenient = GateConfig(min_value=0.0, max_gap_to_linear=1.0)
    assert decide(lenient, bad, {"champion": None}).decision != REJECT
    off = GateConfig(min_value=0.0, max_gap_to_linear=None)
    assert all(r.rule != rule.rule for r in decide(off, bad, {"champion": None}).rules)

    # The diagnosis shown next to the gate agrees with it.
    healthy = {"state": "healthy", "advice": "curves look healthy", "evidence": {}}
    assert reconcile_diagnosis(healthy, rejected)["state"] == "worse_than_linear"
    kept = reconcile_diagnosis(healthy, decide(cfg, good, {"champion": None}))
    assert kept["state"] == "healthy" and "linear baseline" in kept["line"]


def test_gate_refuses_a_test_split_without_a_trained_class():
    data = blobs()
    test = data.test.subset(np.flatnonzero(data.test.y != 2))
    lacking = Dataset(
        data.train, data.validation, test, data.label_names, data.feature_shape, "blobs"
    )
    assert missing_classes(lacking) == ["c"]
    assert missing_classes(data) == []
    metrics = classification_metrics(test.y, 5.0 * np.eye(3)[test.y], data.label_names)
    metrics |= {"slices": {}, "classes_missing_from_test": missing_classes(lacking)}
    decision = decide(GateConfig(), metrics, {"champion": None})
    assert metrics["accuracy"] == 1.0 and decision.decision == REJECT
    assert "no example of class(es) ['c']" in decision.reason


@pytest.mark.parametrize(
    ("pretrained", "scratch", "chosen"),
    [
        ((0.90, 0.3), (0.95, 0.4), "scratch"),
        ((0.95, 0.3), (0.90, 0.1), "pretrained"),
        ((0.95, 0.3), (0.95, 0.2), "scratch"),  # a tie goes to the lower log loss
        ((0.95, 0.2), (0.95, 0.3), "pretrained"),
    ],
)
def test_choose_initialization(pretrained, scratch, chosen):
    assert choose_initialization(pretrained, scratch) == chosen


def blobs_run(tmp_path, finetune: dict) -> tuple[str, str, str]:
    """(config, data uri, finetune uri) of the real validate and finetune stages on a blobs
    table, from a pretrained encoder with all-zero weights (it outputs a constant)."""
    data = blobs(300)
    columns = {
        f"f{i}": np.concatenate([s.x[:, i] for s in data.splits().values()]) for i in range(6)
    }
    labels = np.concatenate([s.y for s in data.splits().values()])
    pq.write_table(pa.table({**columns, "label": labels}), tmp_path / "blobs.parquet")
    model = {"name": "mlp", "hidden_dim": 16, "embed_dim": 8, "dropout": 0.0}
    cfg = config_json(
        f"file://{tmp_path}/store",
        data={"source": str(tmp_path / "blobs.parquet")},
        model=model,
        finetune={"epochs": 5, "min_steps": 0, "early_stopping_patience": None, **finetune},
    )
    _, data_uri = run_validate(cfg, "r1")
    dataset = with_features(load_validated(make_context(cfg, "r1").open(data_uri)))
    encoder = build_encoder(ModelConfig(**model), dataset.feature_shape)
    for parameter in encoder.parameters():
        parameter.data.zero_()
    writer = make_context(cfg, "r1").writer("pretrain")
    writer.put_bytes(
        "encoder.pt",
        to_bytes(encoder_payload(encoder, ModelConfig(**model), dataset.feature_shape)),
    )
    return cfg, data_uri, run_finetune(cfg, "r1", data_uri, writer.commit())


def test_finetune_ships_scratch_when_the_pretrained_encoder_is_useless(tmp_path):
    """The zero encoder loses to a random initialization on validation: from-scratch ships."""
    _, _, finetune_uri = blobs_run(tmp_path, {"ensemble_size": 1, "blend_with_linear": False})
    finetuned = ArtifactSet.open(finetune_uri)
    payoff = finetuned.get_json("pretraining_payoff.json")
    assert payoff["decided_on"] == "validation"
    assert payoff["scratch_val_score"] > payoff["pretrained_val_score"]
    assert payoff["initialization"] == "scratch"
    assert finetuned.summary["initialization"] == "scratch"
    assert finetuned.summary["final_val_accuracy"] == payoff["scratch_val_score"]


def test_finetune_blends_with_the_linear_fit_weighted_out_of_fold(tmp_path):
    """An ensemble of 3: members 2 and 3 are cross-fitted on 2 folds, so every training row has
    an out-of-fold prediction (and trees fitted on the same folds); trees that get weight get
    the lowest-loss grid pair's, the linear weight at it at least the lowest-loss one; the shipped
    model carries the linear part and the trees, and evaluate reports the weights and scores the
    linear baseline with the very same fit."""
    cfg, data_uri, finetune_uri = blobs_run(tmp_path, {"ensemble_size": 3})
    finetuned = ArtifactSet.open(finetune_uri)
    blend = finetuned.get_json("blend.json")
    train_rows = finetuned.summary["labelled_examples"]
    assert blend["chosen_by"].startswith(f"out-of-fold predictions of the {train_rows} training")
    assert "(2 folds;" in blend["chosen_by"] and "and trees)" in blend["chosen_by"]
    assert blend["loss"] == "log loss"
    pairs = {f"{w},{t}" for w in BLEND_GRID for t in BLEND_GRID if w + t <= 1.0 + 1e-9}
    assert set(blend["losses"]) == pairs
    lowest = f"{blend['lowest_loss_weight']},{blend['lowest_loss_trees_weight']}"
    assert blend["losses"][lowest] == min(blend["losses"].values())
    if blend["trees_weight"] > 0:
        assert blend["trees_weight"] == blend["lowest_loss_trees_weight"]
        assert blend["linear_weight"] >= blend["lowest_loss_weight"]
    assert blend["trees"]["model"] == "HistGradientBoostingClassifier on the preprocessed features"
    assert blend["linear"]["chosen_by"] == f"5-fold cross-validation on {train_rows} training rows"
    assert finetuned.summary["blend"]["linear_weight"] == blend["linear_weight"]
    payload = from_bytes(finetuned.get_bytes("model.pt"))
    assert payload["blend"]["linear_weight"] == blend["linear_weight"]
    assert payload["ensemble_size"] == 3
    model = load_classifier(payload)
    assert isinstance(model.network, Blend) == (blend["linear_weight"] + blend["trees_weight"] > 0)
    assert ("trees_state_dict" in payload) == (blend["trees_weight"] > 0)

    evaluate_uri = run_evaluate(cfg, "r1", data_uri, finetune_uri)
    metrics = ArtifactSet.open(evaluate_uri).get_json("metrics.json")
    assert metrics["blend"]["linear_weight"] == blend["linear_weight"]
    assert metrics["baselines"]["linear"]["strength"] == blend["linear"]["strength"]
    assert metrics["baselines"]["linear"]["losses"] == blend["linear"]["losses"]


def test_finetune_reports_the_automatic_schedule_of_a_small_table(tmp_path):
    """No batch size set: the table's labelled rows // 16 (clamped to 16..64) trains with
    several steps per epoch, and the summary and model.pt say which batch and how many steps."""
    _, _, finetune_uri = blobs_run(
        tmp_path,
        {"ensemble_size": 1, "blend_with_linear": False, "compare_with_scratch": False},
    )
    summary = ArtifactSet.open(finetune_uri).summary
    rows = summary["labelled_examples"]
    assert summary["batch_size"] == auto_batch_size(rows, table=True) < 64
    assert summary["steps_per_epoch"] == math.ceil(rows / summary["batch_size"]) > 4
    assert summary["steps"] == summary["epochs"] * summary["steps_per_epoch"]
    assert (summary["max_epochs"], summary["patience_epochs"]) == (5, None)
    payload = from_bytes(ArtifactSet.open(finetune_uri).get_bytes("model.pt"))
    assert payload["training"] == {key: summary[key] for key in TRAINING_KEYS}


def test_a_table_with_repeated_rows_passes_validate_data(tmp_path):
    """Repeated rows (a few categorical columns make many) no longer straddle train and test,
    so the leakage check has nothing to refuse; the splits share no feature row."""
    rng = np.random.default_rng(0)
    n = 600
    plan = rng.choice(["basic", "pro", "max"], n)
    seats = rng.integers(1, 6, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    label = np.where(((plan == "pro") & (seats > 2)) ^ (rng.random(n) < 0.1), "yes", "no")
    path = tmp_path / "repeats.parquet"
    table = pa.table({"plan": plan, "seats": seats, "region": region, "churn": label})
    pq.write_table(table, path)
    cfg = config_json(
        f"file://{tmp_path}/store", data={"source": str(path), "label_column": "churn"}
    )
    _, data_uri = run_validate(cfg, "r1")
    dataset = load_validated(make_context(cfg, "r1").open(data_uri))
    rows = {name: {tuple(r) for r in s.x.tolist()} for name, s in dataset.splits().items()}
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["validation"]
    assert not rows["validation"] & rows["test"]
    assert sum(len(s) for s in dataset.splits().values()) == n
    assert len({tuple(r) for s in dataset.splits().values() for r in s.x.tolist()}) <= 60


def test_a_handful_of_distinct_rows_falls_back_to_the_plain_split():
    """Six distinct feature rows cannot be kept together with every class in every split: the
    plain split (the leakage check then reports the repeats)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    groups = rng.integers(0, 6, 400).astype(np.uint64)
    grouped = split_indices(DataConfig(), y, 2, groups=groups)
    assert grouped.keys() == split_indices(DataConfig(), y, 2).keys()
    for name, rows in split_indices(DataConfig(), y, 2).items():
        np.testing.assert_array_equal(grouped[name], rows)
