"""evaluate: score the fine-tuned model (challenger) and the registry's champion on the same test
split, with bootstrap intervals and slices; write the metrics, the comparison and the report.

Outputs (artifact set): ``metrics.json`` (the challenger's metrics and slices),
``comparison.json`` (the champion it was compared with, its metrics and slices, the intervals),
``report.html``. The report shows the gate's verdict on these numbers; the gate stage decides
again from the stored files (see ``trainpipe.evaluate.gate``).

The test split is read once, batch by batch (``collect_outputs``): arrays in memory and the
shards of a sharded source go through the same loop, and only labels and each model's reduced
outputs are kept (a few numbers per example, whatever the number of classes). The
baselines train on a bounded sample of a streamed training split and are scored on a bounded
sample of its test split (``SAMPLE_ROWS``; ``baselines.test_examples`` says how many).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from trainpipe.data.datasets import Dataset, Split, label_subset, with_features
from trainpipe.data.streaming import StreamSplit, labelled_subset, materialize
from trainpipe.evaluate.baselines import baseline_scores
from trainpipe.evaluate.champion import load_champion
from trainpipe.evaluate.gate import decide, primary_metric
from trainpipe.evaluate.metrics import missing_classes as classes_missing
from trainpipe.evaluate.outputs import SplitOutputs, collect_outputs
from trainpipe.evaluate.predict import predict_logits
from trainpipe.evaluate.report import shown_headline
from trainpipe.evaluate.scoring import classification_results, regression_results
from trainpipe.evaluate.slices import slice_column_indices
from trainpipe.models.checkpoint import from_bytes, load_classifier
from trainpipe.registry import Registry
from trainpipe.stages.context import StageContext, make_context
from trainpipe.stages.evaluation_output import report_page, write_evaluation
from trainpipe.train.finetuning import resolve_label_fraction

REGRESSION_HEADLINE = ("r2", "rmse", "mae")


def missing_classes(
    dataset: Dataset,
    train_counts: list[int] | None = None,
    test_y: np.ndarray | None = None,
) -> list[str]:
    """Names of classes with training examples but none in the test split; ``train_counts``
    (validation's count per class) and ``test_y`` stand in for streamed splits' labels."""
    test_y = dataset.test.y if test_y is None else test_y
    if train_counts is None:
        return classes_missing(dataset.train.y, test_y, dataset.label_names)
    # One example of each class validation counted is all the helper needs to know.
    seen = np.flatnonzero(np.asarray(train_counts) > 0)
    return classes_missing(seen, test_y, dataset.label_names)


def sampled(dataset: Dataset, label_fraction: float, seed: int) -> Dataset:
    """A streamed dataset as bounded arrays for the baselines: the labelled shards fine-tuning
    trained on, validation and test, each at most ``SAMPLE_ROWS`` rows in storage order."""
    return replace(
        dataset,
        train=materialize(labelled_subset(dataset.train, label_fraction, seed)),
        validation=materialize(dataset.validation),
        test=materialize(dataset.test),
    )


def run_baselines(ctx: StageContext, dataset: Dataset) -> dict:
    """Linear and tree baselines on the labelled rows fine-tuning used, scored on test."""
    cfg = ctx.cfg.finetune
    fraction = resolve_label_fraction(cfg, dataset.source)
    if isinstance(dataset.train, StreamSplit):
        dataset, fraction = sampled(dataset, fraction, cfg.seed), 1.0
    features = with_features(dataset)
    rows = label_subset(Split(np.arange(len(dataset.train)), dataset.train.y), fraction, cfg.seed).x
    categorical = (
        [c.kind == "categorical" for c in dataset.preprocess.columns]
        if dataset.preprocess
        else None
    )
    scores = baseline_scores(
        {**features.splits(), "train": features.train.subset(rows)},
        {**dataset.splits(), "train": dataset.train.subset(rows)},
        dataset.num_classes,
        categorical=categorical,
        top_k=ctx.cfg.gate.top_k,
        regression=dataset.regression,
    )
    return {**scores, "test_examples": len(dataset.test)}


def test_outputs(ctx: StageContext, dataset: Dataset, model, champion) -> SplitOutputs:
    """The challenger's (and a comparable champion's) outputs on the test split, with the
    slice columns' values: one pass over the split, batch by batch."""
    models = {"challenger": lambda x: predict_logits(model, x)}
    if champion is not None and champion.comparable:
        models["champion"] = lambda x: champion.logits(x, dataset.preprocess)
    columns = slice_column_indices(
        dataset.feature_names, dataset.feature_shape, ctx.cfg.gate.slice_columns
    )
    top_k = None if dataset.regression else ctx.cfg.gate.top_k
    return collect_outputs(dataset.test, models, columns, top_k=top_k)


def evaluate_outputs(
    ctx: StageContext,
    dataset: Dataset,
    outputs: SplitOutputs,
    champion,
    fixed: int | None,
    train_counts: list[int] | None,
) -> tuple[dict, dict]:
    """Metrics (with the baselines) and the champion comparison; ``fixed``: the leading test
    examples that form a continual run's fixed original test set; ``train_counts``: validation's
    count per class for a streamed training split (its labels are not in memory)."""
    if dataset.regression:
        scores, comparison = regression_results(outputs, champion)
    else:
        scores, comparison = classification_results(
            ctx.cfg.gate, outputs, dataset.label_names, champion, fixed
        )
        scores["classes_missing_from_test"] = missing_classes(dataset, train_counts, outputs.y)
    scores["baselines"] = run_baselines(ctx, dataset)
    return scores, comparison


def reconcile_diagnosis(diagnosis: dict | None, decision) -> dict:
    """The learning-curve diagnosis, made to agree with the gate's linear-baseline rule: a
    network the gate finds worse than a linear model is never called healthy. ``None`` (a
    warm-started model has no curve diagnosis) reports only the rule."""
    rule = next((r for r in decision.rules if r.rule == "beats_linear_baseline"), None)
    diagnosis = diagnosis or {"state": "not_diagnosed", "advice": "no learning-curve diagnosis"}
    state, advice = diagnosis["state"], diagnosis["advice"]
    if rule is not None and not rule.passed:
        state = "worse_than_linear"
        advice = (
            "the network is worse than a linear model on the same features and split: an "
            "optimization problem; tune the learning rate, train longer, or check the features"
        )
    line = f"{state}: {advice}"
    if rule is not None and rule.passed:
        line += f" ({rule.detail})"
    return {**diagnosis, "state": state, "advice": advice, "line": line}


def run_evaluate(
    config_json: str,
    run_id: str,
    data_uri: str,
    finetune_uri: str,
    metrics=None,
    classification_metrics_artifact=None,
    report=None,
) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.gate
    data = ctx.open(data_uri)
    dataset = ctx.load_data(data_uri)
    info = data.get_json("dataset.json")
    finetuned = ctx.open(finetune_uri)
    payload = from_bytes(finetuned.get_bytes("model.pt"))
    model = load_classifier(payload)
    registry = Registry(ctx.store, ctx.cfg.registry.model_name)
    champion = load_champion(
        registry, dataset.label_names, dataset.feature_shape, dataset.preprocess
    )
    outputs = test_outputs(ctx, dataset, model, champion)
    scores, comparison = evaluate_outputs(
        ctx,
        dataset,
        outputs,
        champion,
        info.get("fixed_test_examples"),
        info["class_counts_train"] if isinstance(dataset.train, StreamSplit) else None,
    )
    # What the shipped model is: the network alone, or blended with the linear model.
    scores["blend"] = payload.get("blend")
    decision = decide(cfg, scores, comparison)
    verdict = decision.to_dict()
    curves = finetuned.get_json("diagnosis.json") if "diagnosis.json" in finetuned.names() else None
    diagnosis = reconcile_diagnosis(curves, decision)
    scores["diagnosis"] = diagnosis
    html = report_page(ctx, cfg, scores, comparison, verdict, finetuned)
    metric = primary_metric(cfg, scores)
    headline = REGRESSION_HEADLINE if dataset.regression else shown_headline(scores)
    writer = write_evaluation(
        ctx,
        {"data": data_uri, "model": finetune_uri},
        scores,
        comparison,
        html,
        headline=headline,
        metric=metric,
        metrics=metrics,
        classification_metrics_artifact=classification_metrics_artifact,
        report=report,
    )
    summary = {k: scores[k] for k in (*headline, "num_examples") if k in scores}
    summary["task"] = dataset.task
    champion_info = comparison["champion"]
    summary["champion_version"] = champion_info["version"] if champion_info else None
    summary["expected_decision"] = verdict["decision"]
    summary["diagnosis"] = diagnosis["state"]
    summary["diagnosis_line"] = diagnosis["line"]
    summary["baselines"] = {
        "metric": metric,
        "network": scores[metric],
        **{name: scores["baselines"][name][metric] for name in ("linear", "hgb")},
    }
    if scores["blend"]:
        summary["baselines"]["linear_weight_in_model"] = scores["blend"]["linear_weight"]
        summary["baselines"]["trees_weight_in_model"] = scores["blend"].get("trees_weight", 0.0)
    print(
        f"[evaluate] {metric} {scores[metric]:.4f} on {len(outputs)} test examples; "
        f"champion: {'v' + champion_info['version'] if champion_info else 'none'}; "
        f"gate would {verdict['decision']}",
        flush=True,
    )
    return writer.commit(summary=summary)
