"""finetune: train a classifier on a labelled subset, starting from the pretrained encoder."""

from __future__ import annotations

import torch

from trainpipe.data.datasets import label_subset
from trainpipe.evaluate.plots import learning_curves_png
from trainpipe.models import Classifier
from trainpipe.models.checkpoint import classifier_payload, from_bytes, load_encoder, to_bytes
from trainpipe.stages.context import make_context
from trainpipe.stages.data_access import load_validated
from trainpipe.stages.entry import stage_entry
from trainpipe.train.objectives import Classification
from trainpipe.train.trainer import Trainer


@stage_entry
def run_finetune(
    config_json: str, run_id: str, data_uri: str, pretrain_uri: str, metrics=None
) -> str:
    ctx = make_context(config_json, run_id)
    if ctx.cfg.cluster.num_nodes > 1:
        from trainpipe.train.trainjob import launch_stage

        return launch_stage(ctx, "finetune", {"data_uri": data_uri, "pretrain_uri": pretrain_uri})
    cfg = ctx.cfg.finetune
    dataset = load_validated(ctx.open(data_uri))
    encoder = load_encoder(from_bytes(ctx.open(pretrain_uri).get_bytes("encoder.pt")))
    torch.manual_seed(cfg.seed)
    model = Classifier(encoder, dataset.num_classes)
    if cfg.strategy == "linear_probe":
        encoder.requires_grad_(False)
    train = label_subset(dataset.train, cfg.label_fraction, cfg.seed)
    result = Trainer(cfg, model, Classification(cfg.label_smoothing), stage="finetune").fit(
        train, dataset.validation
    )
    writer = ctx.writer("finetune", inputs={"data": data_uri, "pretrain": pretrain_uri})
    payload = classifier_payload(
        model.cpu(), ctx.cfg.model, dataset.feature_shape, dataset.label_names
    )
    writer.put_bytes("model.pt", to_bytes(payload))
    history = result.to_dict()
    writer.put_json("history.json", history)
    writer.put_bytes(
        "learning_curves.png",
        learning_curves_png(history["history"], "fine-tuning", result.metric_name),
    )
    final = result.history[-1]
    if metrics is not None:
        for record in result.history:
            metrics.log_metric(
                f"epoch_{record.epoch:03d}_val_accuracy", round(record.val_metric, 4)
            )
        metrics.log_metric("val_accuracy", final.val_metric)
    return writer.commit(
        summary={
            "labelled_examples": len(train),
            "strategy": cfg.strategy,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "final_val_loss": final.val_loss,
            "final_val_accuracy": final.val_metric,
            "samples_per_s": round(result.samples_per_s, 1),
        }
    )
