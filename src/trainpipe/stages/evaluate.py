"""evaluate: score the fine-tuned model (challenger) and the registry's champion on the same test
split, with bootstrap intervals and slices; write the metrics, the comparison and the report.

Outputs (artifact set): ``metrics.json`` (the challenger's metrics and slices),
``comparison.json`` (the champion it was compared with, its metrics and slices, the intervals),
``report.html``. The report shows the gate's verdict on these numbers; the gate stage decides
again from the stored files (see ``trainpipe.evaluate.gate``).
"""

from __future__ import annotations

import numpy as np

from trainpipe.data.stored import load_validated
from trainpipe.evaluate.champion import compare, load_champion
from trainpipe.evaluate.gate import decide
from trainpipe.evaluate.histories import load_histories, load_pretraining
from trainpipe.evaluate.metrics import classification_metrics, softmax
from trainpipe.evaluate.predict import predict_logits
from trainpipe.evaluate.report import evaluation_html, shown_headline
from trainpipe.evaluate.slices import build_slices, slice_scores
from trainpipe.models.checkpoint import from_bytes, load_classifier
from trainpipe.registry import Registry
from trainpipe.stages.context import make_context


def _accuracy(probs: np.ndarray, y: np.ndarray, first: int) -> float:
    return float((probs[:first].argmax(1) == y[:first]).mean())


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
    dataset = load_validated(data)
    test = dataset.test
    slices = build_slices(
        test.y,
        test.x,
        dataset.label_names,
        dataset.feature_names,
        columns=cfg.slice_columns,
        num_buckets=cfg.slice_buckets,
    )
    finetuned = ctx.open(finetune_uri)
    model = load_classifier(from_bytes(finetuned.get_bytes("model.pt")))
    logits = predict_logits(model, test.x)
    scores = classification_metrics(test.y, logits, dataset.label_names, top_k=cfg.top_k)
    probs = softmax(logits.astype(np.float64))
    scores["slices"] = slice_scores(slices, test.y, probs)

    registry = Registry(ctx.store, ctx.cfg.registry.model_name)
    champion = load_champion(registry, dataset.label_names, dataset.feature_shape)
    champion_probs = None
    if champion is not None and champion.comparable:
        champion_probs = softmax(champion.logits(test.x).astype(np.float64))
    comparison = compare(cfg, test.y, probs, champion, champion_probs, slices)
    fixed = data.get_json("dataset.json").get("fixed_test_examples")
    if fixed:  # continual: the forgetting bound's numbers, on the fixed original test set
        scores["fixed_test"] = {"examples": fixed, "accuracy": _accuracy(probs, test.y, fixed)}
        theirs = None if champion_probs is None else _accuracy(champion_probs, test.y, fixed)
        comparison["fixed_test"] = {"examples": fixed, "champion_accuracy": theirs}
    verdict = decide(cfg, scores, comparison).to_dict()
    html = evaluation_html(
        scores,
        comparison,
        verdict,
        load_histories(finetuned, ctx.open),
        min_slice_examples=cfg.min_slice_examples,
        pretraining=load_pretraining(finetuned, ctx.open),
    )

    writer = ctx.writer("evaluate", inputs={"data": data_uri, "model": finetune_uri})
    writer.put_json("metrics.json", scores)
    writer.put_json("comparison.json", comparison)
    writer.put_text("report.html", html)
    if metrics is not None:
        # The report's headline numbers are the ones the KFP UI shows as Metrics.
        for name in shown_headline(scores):
            metrics.log_metric(name, round(scores[name], 6))
        if comparison["champion"] and "metrics" in comparison["champion"]:
            theirs = comparison["champion"]["metrics"][cfg.metric]
            metrics.log_metric(f"champion_{cfg.metric}", round(theirs, 6))
            metrics.log_metric(f"{cfg.metric}_vs_champion", round(scores[cfg.metric] - theirs, 6))
    if classification_metrics_artifact is not None:
        classification_metrics_artifact.log_confusion_matrix(
            scores["labels"], scores["confusion_matrix"]
        )
    if report is not None:
        with open(report.path, "w") as f:
            f.write(html)
    summary = {k: scores[k] for k in ("accuracy", "macro_f1", "log_loss", "ece", "num_examples")}
    champion_info = comparison["champion"]
    summary["champion_version"] = champion_info["version"] if champion_info else None
    summary["expected_decision"] = verdict["decision"]
    print(
        f"[evaluate] {cfg.metric} {scores[cfg.metric]:.4f} on {len(test)} test examples; "
        f"champion: {'v' + champion_info['version'] if champion_info else 'none'}; "
        f"gate would {verdict['decision']}",
        flush=True,
    )
    return writer.commit(summary=summary)
