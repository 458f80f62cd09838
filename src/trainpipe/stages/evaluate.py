"""evaluate: score the fine-tuned model on the test split and write the report."""

from __future__ import annotations

import numpy as np
import torch

from trainpipe.evaluate.metrics import classification_metrics
from trainpipe.evaluate.report import evaluation_html
from trainpipe.models.checkpoint import from_bytes, load_classifier
from trainpipe.stages.context import make_context
from trainpipe.stages.data_access import load_validated
from trainpipe.stages.entry import stage_entry


def predict_logits(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [
                model(torch.as_tensor(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
        )


@stage_entry
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
    dataset = load_validated(ctx.open(data_uri))
    finetuned = ctx.open(finetune_uri)
    model = load_classifier(from_bytes(finetuned.get_bytes("model.pt")))
    logits = predict_logits(model, dataset.test.x)
    scores = classification_metrics(dataset.test.y, logits, dataset.label_names)
    html = evaluation_html(scores, finetuned.get_json("history.json"))
    writer = ctx.writer("evaluate", inputs={"data": data_uri, "model": finetune_uri})
    writer.put_json("metrics.json", scores)
    writer.put_text("report.html", html)
    if metrics is not None:
        for name in ("accuracy", "macro_f1", "log_loss"):
            metrics.log_metric(name, round(scores[name], 6))
    if classification_metrics_artifact is not None:
        classification_metrics_artifact.log_confusion_matrix(
            scores["labels"], scores["confusion_matrix"]
        )
    if report is not None:
        with open(report.path, "w") as f:
            f.write(html)
    return writer.commit(
        summary={k: scores[k] for k in ("accuracy", "macro_f1", "log_loss", "num_examples")}
    )
