"""What every evaluation writes, for the table/image evaluate stage, the text one and the gate:
the report page (learning curves of the run that made the model), and the evaluate artifact set
with the figures KFP's UI shows (Metrics, a confusion matrix, the HTML report)."""

from __future__ import annotations

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.histories import load_histories, load_pretraining
from trainpipe.evaluate.report import evaluation_html
from trainpipe.stages.context import StageContext


def report_page(
    ctx: StageContext,
    cfg: GateConfig,
    scores: dict,
    comparison: dict,
    verdict: dict,
    finetuned: ArtifactSet,
) -> str:
    """The evaluation page: metrics, the champion comparison, the gate's verdict, and the
    fine-tuning (and pretraining) curves of ``finetuned``."""
    return evaluation_html(
        scores,
        comparison,
        verdict,
        load_histories(finetuned, ctx.open),
        min_slice_examples=cfg.min_slice_examples,
        pretraining=load_pretraining(finetuned, ctx.open),
    )


def write_evaluation(
    ctx: StageContext,
    inputs: dict[str, str],
    scores: dict,
    comparison: dict,
    html: str,
    *,
    headline: tuple[str, ...] | list[str],
    metric: str,
    metrics=None,
    classification_metrics_artifact=None,
    report=None,
    extra_metrics: dict[str, float] | None = None,
) -> ArtifactWriter:
    """Write metrics.json, comparison.json and report.html (uncommitted: the caller commits
    with its summary) and fill the KFP outputs that were passed: the headline numbers (and
    ``extra_metrics``) and the champion's ``metric`` as Metrics, the confusion matrix of a
    classifier, the HTML report."""
    writer = ctx.writer("evaluate", inputs=inputs)
    writer.put_json("metrics.json", scores)
    writer.put_json("comparison.json", comparison)
    writer.put_text("report.html", html)
    if metrics is not None:
        # The report's headline numbers are the ones the KFP UI shows as Metrics.
        for name in headline:
            metrics.log_metric(name, round(scores[name], 6))
        for name, value in (extra_metrics or {}).items():
            metrics.log_metric(name, value)
        champion = comparison["champion"]
        if champion and "metrics" in champion:
            theirs = champion["metrics"][metric]
            metrics.log_metric(f"champion_{metric}", round(theirs, 6))
            metrics.log_metric(f"{metric}_vs_champion", round(scores[metric] - theirs, 6))
    if classification_metrics_artifact is not None and "confusion_matrix" in scores:
        classification_metrics_artifact.log_confusion_matrix(
            scores["labels"], scores["confusion_matrix"]
        )
    if report is not None:
        with open(report.path, "w") as f:
            f.write(html)
    return writer
