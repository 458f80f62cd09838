"""Gradient-boosted trees as a blend member: the packed torch module answers as the fitted
scikit-learn model (missing values included), survives model.pt and ONNX, and the blend gives
them weight only as the evidence says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainpipe.export.onnx_export import check_parity, export_onnx
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import classifier_payload, from_bytes, load_classifier, to_bytes
from trainpipe.models.config import ModelConfig
from trainpipe.models.heads import Blend
from trainpipe.train.blend import choose_blend_weight
from trainpipe.train.linear import predict
from trainpipe.train.trees import _threshold_below, fit_trees, tree_module


def table(n: int, num_classes: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-linear in two of five features, 10% of values missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    score = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 + rng.normal(0, 0.3, n)
    if num_classes is None:
        return x, score
    return x, np.digitize(score, np.quantile(score, np.linspace(0, 1, num_classes + 1)[1:-1]))


def module_predictions(module: torch.nn.Module, x: np.ndarray, regression: bool) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.as_tensor(x)).double()
    return out[:, 0].numpy() if regression else torch.softmax(out, 1).numpy()


@pytest.mark.parametrize("num_classes", [None, 2, 3])
def test_tree_module_answers_as_sklearn_with_missing_values(num_classes):
    x, y = table(300, num_classes)
    model = fit_trees(x, y, num_classes=num_classes)
    module = tree_module(model, num_classes)
    assert module.depth >= 3  # real trees, not stumps
    fresh, _ = table(200, num_classes, seed=1)  # unseen rows, their own missing values
    for rows in (x, fresh):
        np.testing.assert_allclose(
            module_predictions(module, rows, num_classes is None),
            predict(model, rows, num_classes),
            atol=1e-5,
        )


def test_a_class_absent_from_training_gets_no_probability():
    x, y = table(200, 3)
    model = fit_trees(x, y, num_classes=4)
    probs = module_predictions(tree_module(model, 4), x, regression=False)
    assert probs.shape == (200, 4) and probs[:, 3].max() < 1e-12
    np.testing.assert_allclose(probs, predict(model, x, 4), atol=1e-5)


def test_thresholds_round_down_so_float32_inputs_split_as_in_float64():
    below, above = np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(2.0))
    # Three quarters of the way up: round-to-nearest gives ``above``, which would go left.
    threshold = np.array([float(below) + 0.75 * (float(above) - float(below))])
    rounded = _threshold_below(threshold)
    assert rounded[0] == below
    assert above > threshold[0] and not above <= rounded[0]


def test_blend_with_trees_round_trips_and_exports_with_parity():
    x, y = table(300, 3)
    x = np.nan_to_num(x)  # the blend's input is preprocessed (imputed) features
    trees = tree_module(fit_trees(x, y, num_classes=3), 3)
    cfg = ModelConfig(name="mlp", hidden_dim=16, embed_dim=8)
    torch.manual_seed(0)
    network = Classifier(build_encoder(cfg, [5]), 3)
    linear = torch.nn.Linear(5, 3)
    blended = Blend(network, linear, 0.2, "probability", trees=trees, trees_weight=0.5).eval()
    payload = from_bytes(
        to_bytes(classifier_payload(blended, cfg, [5], ["a", "b", "c"], blend={"by": "test"}))
    )
    assert payload["blend"] == {"by": "test", "linear_weight": 0.2, "trees_weight": 0.5}
    loaded = load_classifier(payload)
    rows = torch.as_tensor(x[:50])
    with torch.no_grad():
        mix = (
            0.2 * torch.softmax(linear(rows), 1)
            + 0.3 * torch.softmax(network(rows), 1)
            + 0.5 * torch.softmax(trees(rows), 1)
        )
        np.testing.assert_allclose(loaded(rows), torch.log(mix), atol=1e-5)
    report = check_parity(export_onnx(loaded, [5], 18), loaded, x, atol=1e-4, rtol=1e-4)
    assert report["max_abs_error"] < 1e-4, report


def test_trees_export_routes_missing_values_like_torch():
    x, y = table(300, None)
    module = tree_module(fit_trees(x, y, num_classes=None), None)
    report = check_parity(export_onnx(module, [5], 18), module, x, atol=1e-5, rtol=1e-5)
    assert report["max_abs_error"] < 1e-5, report


def test_regression_blend_with_trees_is_the_weighted_mean():
    x, y = table(200, None)
    x = np.nan_to_num(x)
    trees = tree_module(fit_trees(x, y, num_classes=None), None)
    network, linear = torch.nn.Linear(5, 1), torch.nn.Linear(5, 1)
    blended = Blend(network, linear, 0.25, "mean", trees=trees, trees_weight=0.6)
    rows = torch.as_tensor(x[:20])
    with torch.no_grad():
        expected = 0.25 * linear(rows) + 0.15 * network(rows) + 0.6 * trees(rows)
        np.testing.assert_allclose(blended(rows), expected, atol=1e-5)


def test_trees_join_only_when_they_beat_the_mix_without_them_held_out():
    """The network/linear choice ships unless the rule with trees beats the lowest-loss mix
    without them by more than ``EVIDENCE_Z`` standard errors, cross-validated over the rows:
    trees that are a noisy copy of the even mix win on the rows that chose them, not held out."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    network = y + rng.normal(0, 1.0, 200)
    linear = y + rng.normal(0, 1.0, 200)
    # Trees that add nothing but noise to the even mix: lowest loss with them, by chance.
    similar = 0.5 * (network + linear) + rng.normal(0, 0.1, 200)
    close = choose_blend_weight(network, linear, y, regression=True, trees=similar)
    assert close.lowest_loss_trees_weight > 0 and close.trees_weight == 0.0
    assert close.weight == choose_blend_weight(network, linear, y, regression=True).weight
    much = choose_blend_weight(
        network, linear, y, regression=True, trees=y + rng.normal(0, 0.3, 200)
    )
    assert much.trees_weight == much.lowest_loss_trees_weight >= 0.7


def test_trees_get_weight_only_as_the_evidence_says():
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000)
    good, useless = y + rng.normal(0, 0.3, 2000), -y + rng.normal(0, 0.3, 2000)
    # Useless trees: no weight, and the network/linear choice is the one without trees.
    with_trees = choose_blend_weight(good, useless, y, regression=True, trees=useless)
    alone = choose_blend_weight(good, useless, y, regression=True)
    assert with_trees.trees_weight == 0.0 and with_trees.weight == alone.weight == 0.0
    assert with_trees.losses["0.0,0.0"] == alone.losses["0.0"]
    # Trees the only good predictor: all the weight.
    only = choose_blend_weight(useless, useless, y, regression=True, trees=good)
    assert (only.weight, only.trees_weight) == (0.0, 1.0)
    # Three predictors with independent errors: a mix of all three beats each.
    third = y + rng.normal(0, 0.3, 2000)
    even = choose_blend_weight(good, y + rng.normal(0, 0.3, 2000), y, regression=True, trees=third)
    assert 0.2 <= even.trees_weight <= 0.45 and 0.2 <= even.weight <= 0.45
    assert even.lowest_loss_trees_weight == even.trees_weight
    assert len(even.losses) == 231  # every (linear, trees) pair summing to at most 1


def test_finetune_blend_without_folds_weighs_trees_on_validation():
    """Without cross-fitted folds (one network) the trees' evidence is the validation split:
    moons with noise features, where a useless network and the linear model lose to trees."""
    from sklearn.datasets import make_moons

    from trainpipe.data.datasets import Dataset, Split
    from trainpipe.stages.finetune import blend_with_linear

    x, y = make_moons(900, noise=0.2, random_state=0)
    x = np.hstack([x, np.random.default_rng(0).normal(size=(900, 4))]).astype(np.float32)
    splits = [Split(x[s], y[s]) for s in (slice(0, 500), slice(500, 800), slice(800, 900))]
    data = Dataset(*splits, label_names=["a", "b"], feature_shape=[6], source="moons")
    network = torch.nn.Sequential(torch.nn.Linear(6, 2))
    torch.nn.init.zeros_(network[0].weight)
    torch.nn.init.zeros_(network[0].bias)  # a coin flip
    model, info = blend_with_linear(network, data, data.train, None, None, with_trees=True)
    assert info["chosen_by"] == "the validation split (300 rows)"
    assert info["trees_weight"] >= 0.5 and info["trees_lead_z"] > 1.645
    assert isinstance(model, Blend) and model.trees_weight == info["trees_weight"]
    with torch.no_grad():
        accuracy = float((model(torch.as_tensor(x[800:])).argmax(1).numpy() == y[800:]).mean())
    assert accuracy >= 0.93
