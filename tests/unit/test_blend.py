"""The blend of a table model: the linear fit (strength by cross-validation or validation), its
torch form, the blend weight's choice, and the blended model's round trip through model.pt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainpipe.export.onnx_export import check_parity, export_onnx
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import classifier_payload, from_bytes, load_classifier, to_bytes
from trainpipe.models.config import ModelConfig
from trainpipe.models.heads import Blend, Ensemble
from trainpipe.train import linear as linear_mod
from trainpipe.train.blend import BLEND_GRID, EVIDENCE_Z, choose_blend_weight
from trainpipe.train.linear import (
    fit_linear,
    fold_ids,
    linear_module,
    out_of_fold,
    refined,
    search_strength,
)


def table(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, 5)) + 1.5 * np.eye(classes, 5)[y]).astype(np.float32)
    return x, y


def test_weight_follows_the_evidence():
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000)
    good, useless = y + rng.normal(0, 0.3, 2000), -y + rng.normal(0, 0.3, 2000)
    assert choose_blend_weight(good, useless, y, regression=True).weight == 0.0
    assert choose_blend_weight(useless, good, y, regression=True).weight == 1.0
    # Two equally good predictors with independent errors: the even blend halves the variance.
    other = y + rng.normal(0, 0.3, 2000)
    choice = choose_blend_weight(good, other, y, regression=True)
    assert 0.35 <= choice.lowest_loss_weight <= 0.65
    assert set(choice.losses) == {str(w) for w in BLEND_GRID} and choice.rows == 2000
    assert choice.losses[str(choice.weight)] < min(choice.losses["0.0"], choice.losses["1.0"])


def test_a_lead_within_the_noise_goes_to_the_linear_model():
    """The significance rule: a network slightly better on 60 rows does not outweigh the
    linear model; the same per-row advantage on 6,000 rows does."""
    rng = np.random.default_rng(3)
    for rows, expected_linear in ((60, True), (6000, False)):
        y = rng.normal(size=rows)
        network = y + rng.normal(0, 0.5, rows)
        linear = network + rng.normal(0, 0.25, rows)  # the network's errors plus its own
        choice = choose_blend_weight(network, linear, y, regression=True)
        assert choice.lowest_loss_weight <= 0.2
        if expected_linear:
            assert choice.weight >= choice.lowest_loss_weight + 0.3, choice
        else:
            assert choice.weight <= 0.1, choice


def test_a_lead_under_95_percent_confidence_goes_to_the_linear_model():
    """The rule is a one-sided test at 5%: a network whose out-of-fold lead over the linear
    model is between 1 and 1.645 standard errors (enough for the old one-standard-error rule)
    ships the linear model; a lead of over 1.645 standard errors keeps the network's share."""
    rows = 400
    y = np.zeros(rows)
    rng = np.random.default_rng(0)
    network = rng.normal(0, 0.5, rows)
    noise = rng.normal(size=rows)
    noise -= network * (noise @ network) / (network @ network)  # errors independent of its
    for sigma, significant in ((0.06, False), (0.12, True)):
        linear = network + sigma * noise  # the network's errors plus its own
        choice = choose_blend_weight(network, linear, y, regression=True)
        best = choice.lowest_loss_weight
        differences = linear**2 - (best * linear + (1 - best) * network) ** 2
        z = differences.mean() / (differences.std(ddof=1) / np.sqrt(rows))
        if significant:
            assert z > EVIDENCE_Z and choice.weight < 1.0, (z, choice)
        else:
            assert 1.0 < z < EVIDENCE_Z and choice.weight == 1.0, (z, choice)
    assert 1.6 < EVIDENCE_Z < 1.7


def test_classification_weight_uses_log_loss():
    y = np.array([0, 1, 1, 0])
    confident = np.eye(2)[y] * 0.98 + 0.01
    flat = np.full((4, 2), 0.5)
    assert choose_blend_weight(confident, flat, y, regression=False).weight == 0.0
    # Identical predictions: every weight ties, so the lowest is the even blend, and every
    # weight is within the noise of it, so the linear model ships.
    same = choose_blend_weight(confident, confident, y, regression=False)
    assert same.lowest_loss_weight == 0.5 and same.weight == 1.0


def test_folds_are_stratified_and_cover_every_row():
    y = np.array([0] * 40 + [1] * 8)
    folds = fold_ids(y, 4, stratify=True)
    assert sorted(set(folds)) == [0, 1, 2, 3]
    for k in range(4):
        assert (y[folds == k] == 1).sum() == 2


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_module_is_the_fitted_model(classes):
    x, y = table(300, classes)
    fit = fit_linear(x[:200], y[:200], x[200:], y[200:], num_classes=classes + 1)  # one absent
    assert fit.chosen_by.startswith("5-fold cross-validation on 200 training rows")
    grid = linear_mod.LOGISTIC_C_GRID
    best_of_grid = min(grid, key=lambda c: fit.losses[str(c)])
    assert {float(c) for c in fit.losses} == set(grid) | set(refined(grid, best_of_grid))
    assert fit.strength == float(min(fit.losses, key=fit.losses.get))
    layer = linear_module(fit, 5)
    with torch.no_grad():
        probs = torch.softmax(layer(torch.as_tensor(x[200:])), 1).numpy()
    np.testing.assert_allclose(probs, fit.predict(x[200:]), atol=1e-5)
    assert probs[:, classes].max() < 1e-12  # the class with no training example


def test_the_strength_search_refines_around_the_best_of_the_grid():
    """Coarse to fine: the decade grid, then the half-decade neighbours of its best; a loss
    whose minimum lies between two grid points is found there, and the ends stay the ends."""
    tried = []

    def loss(s: float) -> float:
        tried.append(s)
        return (np.log10(s) - 0.45) ** 2  # minimum at C = 2.8

    losses = search_strength(linear_mod.LOGISTIC_C_GRID, loss)
    assert min(losses, key=losses.get) == 3.162
    assert tried[:6] == list(linear_mod.LOGISTIC_C_GRID) and tried[6:] == [0.3162, 3.162]
    assert refined(linear_mod.LOGISTIC_C_GRID, 100.0) == [31.62]
    assert refined(linear_mod.LOGISTIC_C_GRID, 0.001) == [0.003162]


def test_ridge_module_and_the_validation_rule_for_large_tables(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 0.5, 300)).astype(np.float32)
    monkeypatch.setattr(linear_mod, "CV_MAX_CELLS", 100)  # 200 x 4 cells: "large"
    fit = fit_linear(x[:200], y[:200], x[200:], y[200:], num_classes=None)
    assert fit.chosen_by == "the validation split (100 rows)"
    with torch.no_grad():
        values = linear_module(fit, 4)(torch.as_tensor(x))[:, 0].numpy()
    np.testing.assert_allclose(values, fit.predict(x), atol=1e-4)
    folds = fold_ids(y[:200], 4, stratify=False)
    oof = out_of_fold(
        x[:200], y[:200], folds, regression=True, strength=fit.strength, num_classes=None
    )
    # Out-of-fold predictions are honest: worse than in-sample ones, still far from useless.
    in_sample = np.mean((fit.predict(x[:200]) - y[:200]) ** 2)
    assert in_sample < np.mean((oof - y[:200]) ** 2) < 0.5 * np.var(y)


@pytest.mark.parametrize("regression", [False, True])
def test_blend_round_trips_through_model_pt(regression):
    cfg = ModelConfig(name="mlp", hidden_dim=16, embed_dim=8)
    outputs = 1 if regression else 3
    torch.manual_seed(0)
    members = [Classifier(build_encoder(cfg, [5]), outputs) for _ in range(2)]
    network = Ensemble(members, "mean" if regression else "probability")
    linear = torch.nn.Linear(5, outputs)
    blended = Blend(network, linear, 0.3, "mean" if regression else "probability").eval()
    payload = classifier_payload(
        blended,
        cfg,
        [5],
        [] if regression else ["a", "b", "c"],
        target_scale=(2.0, 3.0) if regression else None,
        blend={"chosen_by": "test"},
    )
    assert payload["blend"] == {"chosen_by": "test", "linear_weight": 0.3}
    assert payload["ensemble_size"] == 2
    loaded = load_classifier(from_bytes(to_bytes(payload)))
    x = torch.randn(7, 5)
    with torch.no_grad():
        expected = blended(x)
        if regression:
            np.testing.assert_allclose(loaded(x), expected * 3.0 + 2.0, atol=1e-5)
            mix = 0.3 * linear(x) + 0.7 * network(x)
        else:
            np.testing.assert_allclose(loaded(x), expected, atol=1e-5)
            mix = torch.log(0.3 * torch.softmax(linear(x), 1) + 0.7 * torch.softmax(network(x), 1))
    np.testing.assert_allclose(expected, mix, atol=1e-5)


def test_a_network_shipped_alone_keeps_its_blend_report_loadable():
    cfg = ModelConfig(name="mlp", hidden_dim=16, embed_dim=8)
    network = Classifier(build_encoder(cfg, [5]), 2).eval()
    report = {"linear_weight": np.float64(0.0), "losses": {"0.0": np.float32(0.5)}}
    payload = from_bytes(to_bytes(classifier_payload(network, cfg, [5], ["a", "b"], blend=report)))
    assert payload["blend"] == {"linear_weight": 0.0, "losses": {"0.0": 0.5}}
    assert "linear_state_dict" not in payload
    assert isinstance(load_classifier(payload), Classifier)


@pytest.mark.parametrize("weight", [0.3, 1.0])
def test_regression_blend_exports_with_parity(weight):
    """The regression blend (inside the target scaling) is one ONNX graph answering like torch;
    weight 1 (the network's share e^-69 in classification, 0 here) too."""
    cfg = ModelConfig(name="mlp", hidden_dim=16, embed_dim=8)
    torch.manual_seed(1)
    network = Ensemble([Classifier(build_encoder(cfg, [5]), 1) for _ in range(2)], "mean")
    blended = Blend(network, torch.nn.Linear(5, 1), weight, "mean")
    payload = classifier_payload(blended, cfg, [5], [], target_scale=(10.0, 4.0))
    model = load_classifier(from_bytes(to_bytes(payload)))
    report = check_parity(
        export_onnx(model, [5], 18),
        model,
        np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32),
        atol=1e-4,
        rtol=1e-4,
    )
    assert report["max_abs_error"] < 1e-4, report


def test_a_class_with_one_training_example_survives_the_folds():
    """Binary, one positive among 20 training rows: the fold holding it leaves a training set
    of one class, which gets the class prior instead of an error."""
    x, _ = table(20, 2)
    y = np.zeros(20, dtype=np.int64)
    y[3] = 1
    fit = fit_linear(x, y, x[:4], y[:4], num_classes=2)
    assert fit.chosen_by.startswith("5-fold cross-validation on 20 training rows")
    assert fit.predict(x).shape == (20, 2)
