"""Metrics, bootstrap intervals and slices against values computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.evaluate_cases import CASES, SLICE_COLUMNS, evaluate_case
from trainpipe.errors import ConfigError
from trainpipe.evaluate import metrics as m
from trainpipe.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from trainpipe.evaluate.slices import build_slices, column_slices, slice_scores

# y_true / y_pred with every case: a hit, a miss, a class never predicted (2).
Y_TRUE = np.array([0, 0, 1, 1, 2])
Y_PRED = np.array([0, 1, 1, 1, 0])


def one_hot_probs(pred: np.ndarray, num_classes: int, confidence: float = 0.8) -> np.ndarray:
    rest = (1 - confidence) / (num_classes - 1)
    probs = np.full((len(pred), num_classes), rest)
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_confusion_precision_recall_f1_by_hand():
    confusion = m.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    precision, recall, f1 = m.precision_recall_f1(confusion)
    # class 0: 1 of 2 predicted right, 1 of 2 found; class 1: 2 of 3, 2 of 2; class 2: never.
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 0.0])
    np.testing.assert_allclose(recall, [1 / 2, 1.0, 0.0])
    np.testing.assert_allclose(f1, [0.5, 0.8, 0.0])
    assert m.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    macro = m.macro_scores(Y_TRUE, Y_PRED, 3)
    assert macro["macro_f1"] == pytest.approx(1.3 / 3)
    assert macro["macro_precision"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert macro["macro_recall"] == pytest.approx(0.5)


def test_log_loss_and_top_k_by_hand():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert m.log_loss(np.array([0, 1]), probs) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    # a certain mistake stays finite (clipped), not inf
    assert np.isfinite(m.log_loss(np.array([1]), np.array([[1.0, 0.0]])))
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.35, 0.25, 0.4]])
    y = np.array([2, 1, 0])
    assert m.top_k_accuracy(y, probs, 1) == 0.0
    assert m.top_k_accuracy(y, probs, 2) == pytest.approx(2 / 3)
    assert m.top_k_accuracy(y, probs, 3) == 1.0
    assert m.top_k_accuracy(y, probs, 10) == 1.0  # k beyond the classes means all of them


def test_expected_calibration_error_by_hand():
    # Four confidences in four different bins; hits at 0.95 and 0.65, misses at 0.85 and 0.75.
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.35, 0.65]])
    y = np.array([0, 1, 0, 1])
    expected = (0.05 + 0.85 + 0.75 + 0.35) / 4
    assert m.expected_calibration_error(y, probs, num_bins=10) == pytest.approx(expected)


def test_ece_of_a_perfectly_calibrated_toy_is_zero():
    # Exactly calibrated: at confidence 0.75 three of four are right, at 0.9 nine of ten.
    probs = np.array([[0.75, 0.25]] * 4 + [[0.9, 0.1]] * 10)
    y = np.array([0, 0, 0, 1] + [0] * 9 + [1])
    assert m.expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)
    # Sampled: labels drawn with the stated probability; ECE shrinks towards 0 with n.
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, size=200_000)
    correct = rng.uniform(size=p.size) < p
    probs = np.column_stack([p, 1 - p])
    assert m.expected_calibration_error(np.where(correct, 0, 1), probs) < 0.005
    # An overconfident model is not calibrated.
    overconfident = np.column_stack([np.full(p.size, 0.99), np.full(p.size, 0.01)])
    assert m.expected_calibration_error(np.where(correct, 0, 1), overconfident) > 0.2


def test_regression_helpers_by_hand():
    y = np.array([1.0, 2.0, 3.0])
    assert m.mean_squared_error(y, [1, 2, 5]) == pytest.approx(4 / 3)
    assert m.mean_absolute_error(y, [1, 2, 5]) == pytest.approx(2 / 3)
    assert m.r2_score(y, [1, 2, 5]) == pytest.approx(1 - 4 / 2)
    assert m.r2_score(y, [1.5, 2, 2.5]) == pytest.approx(0.75)
    assert m.r2_score(y, y) == 1.0
    assert m.r2_score([2, 2], [2, 2]) == 1.0


def test_classification_metrics_agree_with_scikit_learn():
    from sklearn import metrics as sk

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4)) + 2.0 * np.eye(4)[y] * rng.uniform(size=(300, 1))
    scores = m.classification_metrics(y, logits, ["a", "b", "c", "d"], top_k=2)
    probs = m.softmax(logits)
    pred = probs.argmax(1)
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert scores["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert scores["macro_precision"] == pytest.approx(sk.precision_score(y, pred, average="macro"))
    assert scores["log_loss"] == pytest.approx(sk.log_loss(y, probs))
    assert scores["top_k_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y, probs, k=2))
    assert scores["confusion_matrix"] == sk.confusion_matrix(y, pred).tolist()
    assert sum(b["count"] for b in scores["reliability"]) == 300
    assert scores["per_class"]["b"]["support"] == int((y == 1).sum())


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_data():
    fn = m.scalar_metric_fn("accuracy")
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 10_000):
        y = rng.integers(0, 2, size=n)
        pred = np.where(rng.uniform(size=n) < 0.8, y, 1 - y)
        ci = bootstrap_ci(y, one_hot_probs(pred, 2), fn, num_resamples=300, seed=3)
        assert ci.contains(ci.estimate)
        assert ci.estimate == pytest.approx(m.accuracy(y, pred))
        widths.append(ci.upper - ci.lower)
    assert widths[1] < widths[0] / 5  # ~1/sqrt(n): 10x narrower for 100x the data
    again = bootstrap_ci(y, one_hot_probs(pred, 2), fn, num_resamples=300, seed=3)
    assert again == ci  # seeded: reproducible


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=200)
    probs = m.softmax(rng.normal(size=(200, 3)))
    result = paired_bootstrap(y, probs, probs, m.scalar_metric_fn("macro_f1"), num_resamples=200)
    assert (result["difference"].lower, result["difference"].upper) == (0.0, 0.0)
    better = probs + 3.0 * np.eye(3)[y]
    result = paired_bootstrap(y, better, probs, m.scalar_metric_fn("accuracy"), num_resamples=200)
    assert result["difference"].lower > 0
    assert result["challenger"].contains(result["challenger"].estimate)


def test_slices_per_class_and_per_column_value_or_range():
    x = np.column_stack([np.arange(8, dtype=float), [0, 0, 1, 1, 0, 0, 1, 1]])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    slices = build_slices(
        y, x, ["no", "yes"], ["age", "plan"], columns=["age", "plan"], num_buckets=2
    )
    names = [s.name for s in slices]
    assert names == [
        "class=no",
        "class=yes",
        "age in [0, 3.5)",
        "age in [3.5, 7]",
        "plan=0",
        "plan=1",
    ]
    by_name = {s.name: s.indices.tolist() for s in slices}
    assert by_name["age in [3.5, 7]"] == [4, 5, 6, 7]
    assert by_name["plan=1"] == [2, 3, 6, 7]
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    scores = slice_scores(slices, y, one_hot_probs(pred, 2))
    assert scores["class=no"] == pytest.approx(
        {"kind": "class", "n": 4, "accuracy": 0.75, "log_loss": scores["class=no"]["log_loss"]}
    )
    assert scores["plan=1"]["accuracy"] == 0.75


def test_slice_columns_need_named_features():
    with pytest.raises(ConfigError, match="no named feature columns"):
        column_slices(np.zeros((4, 1, 8, 8)), [], ["age"], 4)
    with pytest.raises(ConfigError, match=r"'height' is not a feature column \(features: age\)"):
        column_slices(np.zeros((4, 1)), ["age"], ["height"], 4)


def binary_report(pretraining: dict | None) -> str:
    from trainpipe.evaluate.champion import compare
    from trainpipe.evaluate.config import GateConfig
    from trainpipe.evaluate.gate import decide
    from trainpipe.evaluate.report import evaluation_html

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    logits = np.column_stack([-(y * 2.0 - 1), y * 2.0 - 1]) + rng.normal(size=(60, 2))
    cfg = GateConfig()
    scores = m.classification_metrics(y, logits, ["no", "yes"], top_k=cfg.top_k)
    slices = build_slices(y, logits, ["no", "yes"], [], columns=[], num_buckets=2)
    probs = m.softmax(logits)
    scores["slices"] = slice_scores(slices, y, probs)
    comparison = compare(cfg, y, probs, None, None, slices)
    decision = decide(cfg, scores, comparison).to_dict()
    return evaluation_html(scores, comparison, decision, {}, pretraining=pretraining)


def test_report_says_pretraining_failed_and_shows_pretrained_against_scratch():
    flat = {
        "state": "underfitting",
        "advice": "both losses stay high: more capacity, longer training or better features",
        "evidence": {"chance_loss": 6.04, "final_train_loss": 5.98},
    }
    page = binary_report(
        {
            "diagnosis": flat,
            "labelled_examples": 235,
            "score": "accuracy",
            "initialization": "scratch",
            "pretrained_val_score": 0.90,
            "scratch_val_score": 0.92,
            "pretrained_test_score": 0.91,
            "scratch_test_score": 0.93,
        }
    )
    assert "Pretraining failed (underfitting): its training loss went from 6.0400 to 5.9800" in page
    assert "pretrained encoder reached validation accuracy <b>0.9000</b>" in page
    assert "<b>0.9200</b> from scratch (-0.0200): the <b>scratch</b> model ships" in page
    assert "Pretraining" not in binary_report(None)


def test_binary_report_hides_top_k_and_says_why_slices_are_not_guarded():
    page = binary_report(None)
    assert "top-k" not in page.lower()
    assert page.count("<td>no: no champion yet</td>") == 2  # class=no and class=yes


GOLDEN = Path(__file__).parent / "data" / "evaluate_golden.json"


def golden_champion():
    from trainpipe.evaluate.champion import ChampionModel

    return ChampionModel("3", "etag", "file:///registry/v3", "ab" * 32, "", b"", ("input",))


@pytest.mark.parametrize("kind", list(CASES))
def test_evaluation_from_row_scores_equals_the_full_probability_results(kind):
    # evaluate_golden.json holds what the evaluate stage computed before it kept RowScores:
    # main at db81a26 (collect_outputs kept float32 logits, softmax over the whole split, every
    # metric from [n, C] probabilities) on the same seeded cases. Reduced batch by batch
    # (64-row batches, ties included), every metric, slice, interval and champion number must
    # be the very same float.
    from trainpipe.data.datasets import Split
    from trainpipe.evaluate.config import GateConfig
    from trainpipe.evaluate.outputs import collect_outputs
    from trainpipe.evaluate.scoring import classification_results, regression_results

    golden = json.loads(GOLDEN.read_text())[kind]
    x, y, models = evaluate_case(kind)
    cfg = GateConfig(slice_columns=SLICE_COLUMNS)
    regression = CASES[kind] == 0
    top_k = None if regression else cfg.top_k
    outputs = collect_outputs(Split(x, y), models, [1, 2], top_k=top_k, batch_rows=64)
    if regression:
        scores, comparison = regression_results(outputs, golden_champion())
        got = {k: scores[k] for k in ("r2", "rmse", "mae", "num_examples", "task")}
        assert got == golden["scores"]
        assert comparison["champion"]["metrics"] == golden["comparison"]["champion"]
        return
    labels = [f"k{i}" for i in range(CASES[kind])]
    scores, comparison = classification_results(cfg, outputs, labels, golden_champion(), 100)
    assert scores.pop("fixed_test")["accuracy"] == golden["scores"].pop("fixed_test")
    fixed = comparison.pop("fixed_test")["champion_accuracy"]
    assert fixed == golden["comparison"].pop("fixed_test")
    assert json.loads(json.dumps(scores)) == golden["scores"]
    assert json.loads(json.dumps(comparison)) == golden["comparison"]
    alone = collect_outputs(Split(x, y), {"challenger": models["challenger"]}, [1, 2], top_k=3)
    _, comparison = classification_results(cfg, alone, labels, None, None)
    assert json.loads(json.dumps(comparison)) == golden["alone"]


@pytest.mark.parametrize("num_classes", [2, 1000])
def test_outputs_kept_for_the_test_split_do_not_grow_with_the_classes(num_classes):
    # Evaluation holds its outputs for every test example (a paired bootstrap resamples them):
    # they must cost the same for 2 classes as for 1,000; keeping the probabilities would cost
    # 8 bytes x classes per example and a 1,000-class test split of 5,000 rows 40 MB.
    from trainpipe.data.datasets import Split
    from trainpipe.evaluate.outputs import collect_outputs

    rows = 5_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = rng.integers(0, num_classes, rows)
    weights = rng.normal(size=(4, num_classes)).astype(np.float32)
    models = {"challenger": lambda b: b @ weights, "champion": lambda b: -(b @ weights)}
    outputs = collect_outputs(Split(x, y), models, [0], top_k=3, batch_rows=512)
    per_row = outputs.nbytes / rows
    # labels 8 + one slice column 4 + two models x (predicted 8, two probabilities 16, top-k 1)
    assert per_row == 8 + 4 + 2 * 25
    rows_scores = outputs.outputs["challenger"]
    assert rows_scores.top_k == min(3, num_classes)
    labels = [str(c) for c in range(num_classes)]
    assert m.classification_scores(y, rows_scores, labels)["num_examples"] == rows


def test_regression_outputs_keep_one_number_per_example():
    from trainpipe.data.datasets import Split
    from trainpipe.evaluate.outputs import collect_outputs

    x, y, models = evaluate_case("regression")
    outputs = collect_outputs(Split(x, y), models, [], top_k=None, batch_rows=50)
    assert outputs.outputs["challenger"].shape == (len(y),)
    assert outputs.outputs["challenger"].dtype == np.float32
    np.testing.assert_allclose(outputs.outputs["champion"], models["champion"](x)[:, 0], atol=1e-6)
