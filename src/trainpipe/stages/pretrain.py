"""pretrain: self-supervised masked reconstruction on the training inputs, labels unused."""

from __future__ import annotations

import torch

from trainpipe.models import MaskedReconstructor, build_encoder
from trainpipe.models.checkpoint import encoder_payload, to_bytes
from trainpipe.stages.context import make_context
from trainpipe.stages.data_access import load_validated
from trainpipe.stages.entry import stage_entry
from trainpipe.train.objectives import MaskedReconstruction
from trainpipe.train.trainer import Trainer


@stage_entry
def run_pretrain(config_json: str, run_id: str, data_uri: str, metrics=None) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg
    if cfg.cluster.num_nodes > 1:
        from trainpipe.train.trainjob import launch_stage

        return launch_stage(ctx, "pretrain", {"data_uri": data_uri})
    dataset = load_validated(ctx.open(data_uri))
    torch.manual_seed(cfg.pretrain.seed)
    encoder = build_encoder(cfg.model, dataset.feature_shape)
    writer = ctx.writer("pretrain", inputs={"data": data_uri})
    summary: dict = {"enabled": cfg.pretrain.enabled}
    if cfg.pretrain.enabled:
        model = MaskedReconstructor(encoder, dataset.feature_shape, cfg.model.hidden_dim)
        objective = MaskedReconstruction(cfg.pretrain.mask_ratio)
        result = Trainer(cfg.pretrain, model, objective, stage="pretrain").fit(
            dataset.train, dataset.validation
        )
        writer.put_json("history.json", result.to_dict())
        final = result.history[-1]
        summary |= {
            "objective": objective.name,
            "epochs": len(result.history),
            "final_train_loss": final.train_loss,
            "final_val_loss": final.val_loss,
            "samples_per_s": round(result.samples_per_s, 1),
        }
        if metrics is not None:
            metrics.log_metric("pretrain_val_loss", final.val_loss)
    writer.put_bytes(
        "encoder.pt", to_bytes(encoder_payload(encoder.cpu(), cfg.model, dataset.feature_shape))
    )
    return writer.commit(summary=summary)
