"""finetune: train a classifier on a labelled share of the data, from the pretrained encoder.

Besides the model it stores the learning curves (data and picture), their diagnosis next to a
linear baseline's training loss, and, when ``compare_with_scratch`` is on, the test accuracy of
the same architecture trained from scratch on the same labels: the evidence that pretraining
paid off.

Warm start (``warm_start_uri``, a registry version; the continual pipeline passes the champion)
initializes the whole classifier from that version's ``model.pt`` instead of the pretrained
encoder and trains for ``continual.warm_start_epochs`` at ``finetune.lr`` times
``continual.warm_start_lr_scale`` on every labelled example of the data (the continual planner
already mixed new and replayed examples); everything else (learning curves, diagnosis, torchrun,
TrainJob, checkpoints and resume) is the same code path. The scratch comparison is skipped.
"""

from __future__ import annotations

import math

import torch

from trainpipe.data.datasets import Dataset, Split, label_subset
from trainpipe.data.stored import load_validated
from trainpipe.errors import DataError
from trainpipe.evaluate.plots import learning_curves_png
from trainpipe.evaluate.predict import predict_logits
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import (
    classifier_payload,
    from_bytes,
    load_classifier,
    load_encoder,
    to_bytes,
)
from trainpipe.models.config import ModelConfig
from trainpipe.stages.context import StageContext, make_context
from trainpipe.stages.training_run import (
    checkpoint_store,
    launch_stage,
    put_all,
    run_training,
    setup_world,
)
from trainpipe.stages.tuned import tuned_context, tuned_summary
from trainpipe.train.config import FinetuneConfig
from trainpipe.train.diagnosis import diagnose, linear_baseline_train_loss
from trainpipe.train.distributed import World
from trainpipe.train.finetuning import classifier_trainer
from trainpipe.train.trainer import Trainer
from trainpipe.tune.space import fresh_encoder


def run_finetune(
    config_json: str,
    run_id: str,
    data_uri: str,
    pretrain_uri: str,
    metrics=None,
    warm_start_uri: str = "",
    tune_uri: str = "",
) -> str:
    """``tune_uri``: the tune stage's artifact set, whose best parameters replace the config's."""
    ctx = make_context(config_json, run_id)
    if tune_uri:
        ctx, _ = tuned_context(ctx, tune_uri)
    inputs = {"data_uri": data_uri, "pretrain_uri": pretrain_uri}
    if warm_start_uri:
        inputs["warm_start_uri"] = warm_start_uri
    if tune_uri:
        inputs["tune_uri"] = tune_uri
    if ctx.cfg.cluster.num_nodes > 1:
        return launch_stage(ctx, "finetune", inputs)
    result = run_training(ctx, "finetune", ctx.cfg.finetune, train_finetune, **inputs)
    if metrics is not None:
        for record in result.get_json("history.json")["history"]:
            metrics.log_metric(
                f"epoch_{record['epoch']:03d}_val_loss", round(record["val_loss"], 5)
            )
            metrics.log_metric(
                f"epoch_{record['epoch']:03d}_val_accuracy", round(record["val_metric"], 5)
            )
        metrics.log_metric("val_accuracy", result.summary["final_val_accuracy"])
    return result.uri


def _test_accuracy(model: torch.nn.Module, split: Split) -> float:
    logits = predict_logits(model.eval().cpu(), split.x)
    return float((logits.argmax(1) == split.y).mean())


def _train_classifier(
    ctx: StageContext,
    world: World,
    encoder: torch.nn.Module,
    dataset: Dataset,
    train: Split,
    *,
    stage: str,
    checkpoints: bool,
    cfg: FinetuneConfig,
    initial: dict | None = None,
) -> tuple[Trainer, Classifier, dict]:
    """``initial``: a whole classifier's state dict to start from (warm start)."""
    torch.manual_seed(cfg.seed)
    model = Classifier(encoder, dataset.num_classes)
    if initial is not None:
        model.load_state_dict(initial)
    teacher = None
    if cfg.teacher_uri:
        teacher = load_classifier(from_bytes(ctx.open(cfg.teacher_uri).get_bytes("model.pt")))
    trainer = classifier_trainer(
        cfg,
        model,
        stage=stage,
        world=world,
        teacher=teacher,
        checkpoints=checkpoint_store(ctx, stage, cfg) if checkpoints else None,
    )
    result = trainer.fit(train, dataset.validation)
    return trainer, model, result.to_dict()


def _warm_start(ctx: StageContext, uri: str, dataset: Dataset) -> tuple[ModelConfig, dict]:
    """The model config and classifier state of the registry version at ``uri``."""
    payload = from_bytes(ctx.open(uri).get_bytes("model.pt"))
    if payload["label_names"] != dataset.label_names:
        raise DataError(
            f"data error: the warm start model {uri} predicts {payload['label_names']} but the "
            f"data has {dataset.label_names}; retrain fully (continual.policy "
            "full_retrain_on_drift) or fix the labels"
        )
    return ModelConfig(**payload["model_config"]), load_classifier(payload).state_dict()


def train_finetune(
    config_json: str,
    run_id: str,
    data_uri: str,
    pretrain_uri: str = "",
    warm_start_uri: str = "",
    tune_uri: str = "",
) -> None:
    """Train on every rank; rank 0 commits model.pt, curves, diagnosis and the comparison."""
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.finetune
    if warm_start_uri:
        continual = ctx.cfg.continual
        cfg = cfg.model_copy(
            update={
                "epochs": continual.warm_start_epochs,
                "lr": cfg.lr * continual.warm_start_lr_scale,
                "compare_with_scratch": False,
            }
        )
    world, _ = setup_world(cfg)
    dataset = load_validated(ctx.open(data_uri))
    if warm_start_uri:
        model_cfg, initial = _warm_start(ctx, warm_start_uri, dataset)
        encoder = build_encoder(model_cfg, dataset.feature_shape)
        train = dataset.train
    else:
        model_cfg, initial = ctx.cfg.model, None
        if tune_uri and fresh_encoder(ctx.cfg.tune.space) and not ctx.cfg.pretrain.enabled:
            # The search changed the architecture and nothing was pretrained: a fresh
            # encoder, as in the trials.
            torch.manual_seed(cfg.seed)
            encoder = build_encoder(ctx.cfg.model, dataset.feature_shape)
        else:
            encoder = load_encoder(from_bytes(ctx.open(pretrain_uri).get_bytes("encoder.pt")))
        train = label_subset(dataset.train, cfg.label_fraction, cfg.seed)
    trainer, _, history = _train_classifier(
        ctx,
        world,
        encoder,
        dataset,
        train,
        stage="finetune",
        checkpoints=cfg.checkpoint_every_steps is not None,
        cfg=cfg,
        initial=initial,
    )
    state = trainer.full_state_dict()
    comparison = None
    if cfg.compare_with_scratch:
        scratch_trainer, _, scratch_history = _train_classifier(
            ctx,
            world,
            build_encoder(ctx.cfg.model, dataset.feature_shape),
            dataset,
            train,
            stage="finetune-scratch",
            checkpoints=False,
            cfg=cfg,
        )
        comparison = (scratch_trainer.full_state_dict(), scratch_history)
    if not world.is_main:
        return

    # Fresh modules: under FSDP the trained ones hold sharded parameters.
    final = Classifier(build_encoder(model_cfg, dataset.feature_shape), dataset.num_classes)
    final.load_state_dict(state)
    baseline_loss = linear_baseline_train_loss(train.x, train.y, dataset.num_classes)
    diagnosis = diagnose(
        history["history"],
        chance_loss=math.log(dataset.num_classes),
        baseline_train_loss=baseline_loss,
    )
    print(f"[finetune] learning curves: {diagnosis.summary_line()}", flush=True)
    last = history["history"][-1]
    summary = {
        "labelled_examples": len(train),
        "label_fraction": cfg.label_fraction,
        "strategy": cfg.strategy,
        "processes": world.size,
        "epochs": len(history["history"]),
        "steps": history["steps"],
        "best_epoch": history["best_epoch"],
        "final_train_loss": last["train_loss"],
        "final_val_loss": last["val_loss"],
        "final_val_accuracy": last["val_metric"],
        "samples_per_s": round(history["samples_per_s"], 1),
        "diagnosis": diagnosis.state,
        "linear_baseline_train_loss": baseline_loss,
        "resumed_from_step": history["resumed_from_step"],
    }
    files: dict[str, bytes | dict] = {
        "history.json": history,
        "diagnosis.json": diagnosis.to_dict(),
        "learning_curves.png": learning_curves_png(history["history"], "fine-tuning", "accuracy"),
    }
    if comparison is not None:
        scratch = Classifier(
            build_encoder(ctx.cfg.model, dataset.feature_shape), dataset.num_classes
        )
        scratch.load_state_dict(comparison[0])
        payoff = {
            "labelled_examples": len(train),
            "pretrained_test_accuracy": _test_accuracy(final, dataset.test),
            "scratch_test_accuracy": _test_accuracy(scratch, dataset.test),
            "scratch_history": comparison[1]["history"],
        }
        payoff["pretraining_gain"] = (
            payoff["pretrained_test_accuracy"] - payoff["scratch_test_accuracy"]
        )
        files["pretraining_payoff.json"] = payoff
        summary |= {k: v for k, v in payoff.items() if k != "scratch_history"}
        print(
            f"[finetune] with {len(train)} labels: pretrained "
            f"{payoff['pretrained_test_accuracy']:.4f} vs from scratch "
            f"{payoff['scratch_test_accuracy']:.4f} test accuracy",
            flush=True,
        )
    if warm_start_uri:
        summary["warm_start_from"] = warm_start_uri
        inputs = {"data": data_uri, "warm_start": warm_start_uri}
    else:
        inputs = {"data": data_uri, "pretrain": pretrain_uri}
    if tune_uri:
        inputs["tune"] = tune_uri
        summary |= tuned_summary(ctx.open(tune_uri).get_json("best.json"))
    writer = ctx.writer("finetune", inputs=inputs)
    put_all(writer, files)
    payload = classifier_payload(final, model_cfg, dataset.feature_shape, dataset.label_names)
    writer.put_bytes("model.pt", to_bytes(payload))
    writer.commit(summary=summary)
