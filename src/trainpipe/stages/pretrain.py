"""pretrain: self-supervised training of the encoder on the training inputs, labels unused."""

from __future__ import annotations

import torch

from trainpipe.data.datasets import with_features
from trainpipe.evaluate.plots import learning_curves_png
from trainpipe.models import build_encoder
from trainpipe.models.checkpoint import encoder_payload, to_bytes
from trainpipe.models.encoders import resolve_model
from trainpipe.stages.context import make_context
from trainpipe.stages.training_run import (
    checkpoint_store,
    launch_stage,
    put_all,
    run_training,
    setup_world,
)
from trainpipe.stages.tuned import tuned_context, tuned_summary
from trainpipe.train.diagnosis import diagnose
from trainpipe.train.pretraining import pretraining_setup, resolve_pretrain_batch
from trainpipe.train.trainer import Trainer


def run_pretrain(
    config_json: str, run_id: str, data_uri: str, metrics=None, tune_uri: str = ""
) -> str:
    """``tune_uri``: a search over pretraining keys ran first; its best parameters apply."""
    ctx = make_context(config_json, run_id)
    inputs = {"data_uri": data_uri}
    if tune_uri:
        ctx, _ = tuned_context(ctx, tune_uri)
        inputs["tune_uri"] = tune_uri
    if ctx.cfg.cluster.num_nodes > 1:
        return launch_stage(ctx, "pretrain", inputs)
    result = run_training(ctx, "pretrain", ctx.cfg.pretrain, train_pretrain, **inputs)
    if metrics is not None and "final_val_loss" in result.summary:
        metrics.log_metric("pretrain_val_loss", result.summary["final_val_loss"])
    return result.uri


def train_pretrain(config_json: str, run_id: str, data_uri: str, tune_uri: str = "") -> None:
    """Train on every rank; rank 0 commits encoder.pt, history and the diagnosis."""
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg
    world, device = setup_world(cfg.pretrain)
    dataset = with_features(ctx.load_data(data_uri))
    torch.manual_seed(cfg.pretrain.seed)  # the same initial weights on every rank
    encoder = build_encoder(cfg.model, dataset.feature_shape)
    summary: dict = {
        "enabled": cfg.pretrain.enabled,
        "processes": world.size,
        "device": device.type,
        "precision": cfg.pretrain.precision,
    }
    extra_files: dict[str, bytes | dict] = {}
    encoder_state = encoder.state_dict()
    if cfg.pretrain.enabled:
        pretrain_cfg = resolve_pretrain_batch(
            cfg.pretrain, len(dataset.train), table=dataset.preprocess is not None
        )
        model, objective = pretraining_setup(
            pretrain_cfg,
            encoder,
            dataset.feature_shape,
            resolve_model(cfg.model, dataset.feature_shape).hidden_dim,
        )
        checkpoints = (
            checkpoint_store(ctx, "pretrain", pretrain_cfg)
            if pretrain_cfg.checkpoint_every_steps
            else None
        )
        trainer = Trainer(
            pretrain_cfg, model, objective, stage="pretrain", world=world, checkpoints=checkpoints
        )
        result = trainer.fit(dataset.train, dataset.validation)
        state = trainer.full_state_dict()
        encoder_state = {
            k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
        }
        history = result.to_dict()
        diagnosis = diagnose(history["history"], chance_loss=history["history"][0]["train_loss"])
        final = result.history[-1]
        summary |= {
            "objective": objective.name,
            "epochs": len(result.history),
            "steps": result.steps,
            "batch_size": pretrain_cfg.batch_size,
            "final_train_loss": final.train_loss,
            "final_val_loss": final.val_loss,
            objective.metric_name: final.val_metric,
            "samples_per_s": round(result.samples_per_s, 1),
            "diagnosis": diagnosis.state,
            "resumed_from_step": result.resumed_from_step,
        }
        extra_files = {
            "history.json": history,
            "diagnosis.json": diagnosis.to_dict(),
            "learning_curves.png": learning_curves_png(
                history["history"], "pretraining", objective.metric_name
            ),
        }
    if not world.is_main:
        return
    # A fresh module: under FSDP the trained one holds sharded parameters.
    trained = build_encoder(cfg.model, dataset.feature_shape)
    trained.load_state_dict(encoder_state)
    inputs = {"data": data_uri}
    if tune_uri:
        inputs["tune"] = tune_uri
        summary |= tuned_summary(ctx.open(tune_uri).get_json("best.json"))
    writer = ctx.writer("pretrain", inputs=inputs)
    put_all(writer, extra_files)
    writer.put_bytes(
        "encoder.pt", to_bytes(encoder_payload(trained, cfg.model, dataset.feature_shape))
    )
    writer.commit(summary=summary)
