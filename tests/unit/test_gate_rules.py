"""The gate's rules on evaluation results: thresholds, champion margin, slices, the report."""

from __future__ import annotations

import numpy as np
import pytest

from trainpipe.config import load_config
from trainpipe.errors import ConfigError
from trainpipe.evaluate.champion import compare
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.gate import PROMOTE, REJECT, champion_unchanged, decide
from trainpipe.evaluate.metrics import classification_metrics, softmax
from trainpipe.evaluate.report import evaluation_html
from trainpipe.evaluate.slices import build_slices, slice_scores

LABELS = ["a", "b", "c"]


def evaluate(y, logits, champion_logits=None, cfg: GateConfig | None = None, columns=()):
    """What the evaluate stage computes, on fabricated logits instead of models."""
    cfg = cfg or GateConfig(bootstrap_resamples=200)
    x = np.arange(len(y), dtype=np.float32)[:, None]
    slices = build_slices(y, x, LABELS, ["t"], columns=list(columns), num_buckets=cfg.slice_buckets)
    scores = classification_metrics(y, logits, LABELS)
    probs = softmax(logits)
    scores["slices"] = slice_scores(slices, y, probs)
    champion = champion_probs = None
    if champion_logits is not None:
        champion = FakeChampion()
        champion_probs = softmax(champion_logits)
    return cfg, scores, compare(cfg, y, probs, champion, champion_probs, slices)


class FakeChampion:
    """Stands in for the registry's ONNX champion in ``compare`` (it only reads ``info``)."""

    comparable = True

    def info(self) -> dict:
        return {
            "version": "4",
            "etag": "etag-4",
            "uri": "file:///r/versions/4",
            "model_sha256": "ab" * 32,
            "comparable": True,
            "why_not": "",
        }


def logits_with_accuracy(y: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Confident logits that are right exactly where ``correct`` is true."""
    pred = np.where(correct, y, (y + 1) % 3)
    return 4.0 * np.eye(3)[pred]


def labels(n_per_class: int = 40) -> np.ndarray:
    return np.repeat(np.arange(3), n_per_class)


def rule(decision, name):
    return next(r for r in decision.rules if r.rule == name)


def test_first_model_is_promoted_when_thresholds_hold():
    y = labels()
    cfg, scores, comparison = evaluate(y, logits_with_accuracy(y, np.arange(120) % 10 != 0))
    decision = decide(cfg, scores, comparison)
    assert decision.decision == PROMOTE
    assert decision.champion is None
    assert (
        rule(decision, "beats_champion").detail == "no champion yet: first model, nothing to beat"
    )
    assert decision.reason == (
        "accuracy 0.9000 >= min 0.8500; no champion yet: first model, nothing to beat"
    )
    assert "challenger" in comparison["intervals"]["accuracy"]


def test_thresholds_each_fail_with_their_numbers():
    y = labels()
    logits = logits_with_accuracy(y, np.arange(120) % 5 != 0)  # 0.8, confident: bad calibration
    cfg = GateConfig(min_value=0.85, max_log_loss=0.2, max_ece=0.05, bootstrap_resamples=0)
    cfg, scores, comparison = evaluate(y, logits, cfg=cfg)
    decision = decide(cfg, scores, comparison)
    assert decision.decision == REJECT
    failed = {r.rule: r.detail for r in decision.rules if not r.passed}
    assert failed["min_value"] == "accuracy 0.8000 < min 0.8500"
    assert failed["max_log_loss"].startswith(f"log loss {scores['log_loss']:.4f} > max 0.2000")
    assert failed["max_ece"].startswith("ECE ") and "> max 0.0500" in failed["max_ece"]
    assert decision.reason == "; ".join(failed.values())


def test_challenger_must_beat_the_champion_by_the_margin():
    y = labels()
    champion = logits_with_accuracy(y, np.arange(120) % 10 != 0)  # 0.900
    challenger = logits_with_accuracy(y, np.arange(120) % 20 != 0)  # 0.950
    cfg = GateConfig(min_improvement=0.02, bootstrap_resamples=300)
    cfg, scores, comparison = evaluate(y, challenger, champion, cfg)
    decision = decide(cfg, scores, comparison)
    beats = rule(decision, "beats_champion")
    assert beats.passed and decision.decision == PROMOTE
    assert beats.values["difference"] == pytest.approx(0.05)
    assert beats.detail.startswith("accuracy 0.9500 vs champion v4 0.9000: +0.0500, 95% CI [")
    assert decision.champion == {"version": "4", "etag": "etag-4", "uri": "file:///r/versions/4"}

    cfg, scores, comparison = evaluate(y, champion, challenger, cfg)  # swapped: worse
    decision = decide(cfg, scores, comparison)
    assert decision.decision == REJECT
    assert rule(decision, "beats_champion").detail.startswith(
        "accuracy 0.9000 vs champion v4 0.9500: -0.0500"
    )

    tie = GateConfig(min_improvement=0.0, bootstrap_resamples=0)
    _, scores, comparison = evaluate(y, champion, champion, tie)
    assert decide(tie, scores, comparison).decision == PROMOTE  # "not worse" accepts a tie


def test_confident_improvement_requires_the_interval_above_the_margin():
    y = labels()
    champion = logits_with_accuracy(y, np.arange(120) % 10 != 0)
    correct = np.arange(120) % 10 != 0
    correct[[0, 10]], correct[1] = True, False  # 2 fixed, 1 broken: +1 example overall
    slightly = logits_with_accuracy(y, correct)
    cfg = GateConfig(require_confident_improvement=True, bootstrap_resamples=300)
    cfg, scores, comparison = evaluate(y, slightly, champion, cfg)
    beats = rule(decide(cfg, scores, comparison), "beats_champion")
    assert not beats.passed  # +0.0083, but the interval reaches below 0
    assert "could be noise" in beats.detail


def test_a_regressed_slice_blocks_promotion():
    y = labels()
    # Champion: 0.9 everywhere. Challenger: better overall (0.95) but class c drops to 0.85.
    champion = logits_with_accuracy(y, np.arange(120) % 10 != 0)
    correct = np.ones(120, bool)
    correct[80:86] = False  # class c: 34/40 = 0.85 (champion 36/40 = 0.90)
    challenger = logits_with_accuracy(y, correct)
    cfg = GateConfig(max_slice_regression=0.02, bootstrap_resamples=0)
    cfg, scores, comparison = evaluate(y, challenger, champion, cfg)
    decision = decide(cfg, scores, comparison)
    assert rule(decision, "beats_champion").passed
    slices = rule(decision, "slices")
    assert not slices.passed and decision.decision == REJECT
    assert slices.detail == (
        "1 of 3 guarded slices lost more than 0.0200 accuracy vs the champion: "
        "class=c 0.9000 -> 0.8500 (-0.0500)"
    )
    loose = cfg.model_copy(update={"max_slice_regression": 0.05})
    assert decide(loose, scores, comparison).decision == PROMOTE  # exactly the margin is allowed
    small = cfg.model_copy(update={"min_slice_examples": 41})
    assert (
        "no slice has the 41 examples" in rule(decide(small, scores, comparison), "slices").detail
    )


def test_column_slices_are_guarded_too():
    y = labels()
    champion = logits_with_accuracy(y, np.ones(120, bool))
    correct = np.ones(120, bool)
    correct[::4] = False  # spread over the classes: every class loses 0.25, so does every range
    challenger = logits_with_accuracy(y, correct)
    cfg = GateConfig(min_value=0.5, min_improvement=-1.0, bootstrap_resamples=0, slice_buckets=2)
    cfg, scores, comparison = evaluate(y, challenger, champion, cfg, columns=["t"])
    slices = rule(decide(cfg, scores, comparison), "slices")
    assert not slices.passed
    assert {e["slice"] for e in slices.values["regressed"]} >= {
        "t in [0, 59.5)",
        "t in [59.5, 119]",
    }


def test_an_incomparable_champion_rejects_with_the_reason():
    y = labels()
    cfg, scores, comparison = evaluate(y, logits_with_accuracy(y, np.ones(120, bool)))
    comparison["champion"] = {
        "version": "2",
        "etag": "e",
        "uri": "u",
        "comparable": False,
        "why_not": "it predicts labels ['x', 'y'], the test data has ['a', 'b', 'c']",
    }
    decision = decide(cfg, scores, comparison)
    assert decision.decision == REJECT
    assert "champion version 2 cannot be scored on this test data (it predicts labels" in (
        decision.reason
    )


def test_champion_unchanged_rule():
    seen = {"version": "3", "etag": "x", "uri": "u"}
    assert champion_unchanged(seen, "3", "x").passed
    assert champion_unchanged(None, None, None).passed
    assert not champion_unchanged(seen, "3", "y").passed  # re-promoted meanwhile
    moved = champion_unchanged(None, "1", "z")
    assert not moved.passed and "was none, now v1" in moved.detail


def test_report_shows_the_decision_every_rule_and_the_comparison():
    y = labels()
    champion = logits_with_accuracy(y, np.arange(120) % 10 != 0)
    challenger = logits_with_accuracy(y, np.arange(120) % 20 != 0)
    cfg, scores, comparison = evaluate(y, challenger, champion)
    decision = decide(cfg, scores, comparison).to_dict()
    history = {
        "metric_name": "accuracy",
        "history": [
            {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_metric": 0.5 + e / 10}
            for e in (1, 2, 3)
        ],
    }
    page = evaluation_html(
        scores, comparison, decision, {"fine-tuning": history, "pretraining": history}
    )
    assert "<p class='banner promote'>PROMOTE</p>" in page
    for r in decision["rules"]:
        assert r["detail"].replace(">", "&gt;").replace("<", "&lt;") in page
    for alt in ("confusion matrix", "reliability diagram", "learning curves", "pretraining"):
        assert f'<img alt="{alt}"' in page
    assert "Champion: version 4" in page and "class=c" in page


def test_gate_config_validation_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"gate.metric='f2'"):
        load_config(overrides=["gate.metric=f2"])
    with pytest.raises(ConfigError, match="needs bootstrap intervals; set bootstrap_resamples"):
        load_config(
            overrides=["gate.require_confident_improvement=true", "gate.bootstrap_resamples=0"]
        )
    with pytest.raises(ConfigError, match=r"gate.max_ece=2"):
        load_config(overrides=["gate.max_ece=2"])
    cfg = load_config(
        overrides=["gate.slice_columns=[age, plan]", "gate.max_slice_regression=null"]
    )
    assert cfg.gate.slice_columns == ["age", "plan"] and cfg.gate.max_slice_regression is None
    for name, field in GateConfig.model_fields.items():
        assert field.description, f"gate.{name} has no docstring"
