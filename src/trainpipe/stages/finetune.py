"""finetune: train a classifier on the labelled training rows, from the pretrained encoder.

Tables are trained on their preprocessed features (``with_features``); the model that is saved
takes encoded rows and carries the preprocessing. With ``compare_with_scratch`` on, the same
architecture is also trained from a random initialization on the same labels and the one with
the better *validation* accuracy ships (``pretraining_payoff.json`` says which and by how much;
test accuracies are reported, never used to choose). Small tables then get an ensemble: more
networks from the chosen initialization with other seeds, averaged in probability. Also stored:
the learning curves (data and picture) and their diagnosis.

Warm start (``warm_start_uri``, a registry version; the continual pipeline passes the champion)
initializes the whole classifier from that version's ``model.pt`` instead of the pretrained
encoder and trains for ``continual.warm_start_epochs`` at ``finetune.lr`` times
``continual.warm_start_lr_scale`` on every labelled example of the data (the continual planner
already mixed new and replayed examples); everything else (learning curves, diagnosis, torchrun,
TrainJob, checkpoints and resume) is the same code path. The scratch comparison and the
ensemble are skipped.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch

from trainpipe.data.batches import split_batches
from trainpipe.data.datasets import Dataset, Split, with_features
from trainpipe.data.streaming import StreamSplit, labelled_subset, materialize
from trainpipe.errors import DataError
from trainpipe.evaluate.metrics import softmax
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
from trainpipe.models.heads import Blend, Ensemble
from trainpipe.stages.context import StageContext, make_context
from trainpipe.stages.training_run import (
    checkpoint_store,
    launch_stage,
    put_all,
    run_training,
    setup_world,
)
from trainpipe.stages.tuned import tuned_context, tuned_summary
from trainpipe.train.blend import EVIDENCE_FOLDS, EVIDENCE_Z, choose_blend_weight
from trainpipe.train.config import FinetuneConfig
from trainpipe.train.diagnosis import diagnose, linear_baseline_train_loss
from trainpipe.train.distributed import World
from trainpipe.train.finetuning import (
    classifier_trainer,
    resolve_ensemble_size,
    resolve_label_fraction,
    resolve_schedule,
)
from trainpipe.train.linear import fit_linear, fold_ids, linear_module, predict
from trainpipe.train.linear import out_of_fold as linear_out_of_fold
from trainpipe.train.objectives import Classification, Regression
from trainpipe.train.trainer import Trainer
from trainpipe.train.trees import fit_trees, tree_module, trees_out_of_fold
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
        score = result.summary["score"]
        metrics.log_metric(f"val_{score}", result.summary[f"final_val_{score}"])
    return result.uri


def _scores(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """(score, loss) on a split: accuracy and log loss, or for regression targets R^2 and the
    mean squared error (of standardized targets, where training happens).

    One pass in batches (a streamed split is read shard by shard) that keeps running sums, not
    outputs per example: a validation split of a large table would otherwise hold its logits,
    their concatenation and a log-softmax of them at once (the run's peak grew with the
    split)."""
    model = model.eval().cpu()
    rows, loss_sum, correct = 0, 0.0, 0
    shift, y_sum, y_squares = None, 0.0, 0.0  # the targets' variance, shifted for precision
    for x, y in split_batches(split):
        out = torch.as_tensor(predict_logits(model, x))
        target = torch.as_tensor(np.asarray(y))
        rows += len(target)
        if target.dtype.is_floating_point:
            loss_sum += float(((out[:, 0].double() - target.double()) ** 2).sum())
            if shift is None:
                shift = float(target[0])
            centred = target.double() - shift
            y_sum += float(centred.sum())
            y_squares += float((centred**2).sum())
            continue
        loss_sum += float(torch.nn.functional.cross_entropy(out, target, reduction="sum"))
        correct += int((out.argmax(1) == target).sum())
    if shift is not None:
        variance = y_squares / rows - (y_sum / rows) ** 2
        return 1.0 - loss_sum / rows / max(variance, 1e-12), loss_sum / rows
    return correct / rows, loss_sum / rows


def _score(model: torch.nn.Module, split: Split) -> float:
    """Accuracy, or R^2 for regression targets."""
    return _scores(model, split)[0]


def standardized_targets(
    dataset: Dataset, scale: tuple[float, float] | None = None
) -> tuple[Dataset, tuple[float, float] | None]:
    """Regression trains on targets standardized with the training split's mean and standard
    deviation (or ``scale``: a warm-started model keeps its own); the saved model scales back.
    Classification is returned as it is."""
    if not dataset.regression:
        return dataset, None
    if isinstance(dataset.train, StreamSplit):
        # The loader standardizes each row group; the moments come from validation.
        mean, std = scale or dataset.target_stats
        streamed = {
            name: split.replaced(target_scale=(mean, std))
            for name, split in dataset.splits().items()
        }
        return replace(dataset, **streamed), (mean, std)
    mean, std = scale or (float(dataset.train.y.mean()), float(dataset.train.y.std()) or 1.0)
    splits = {
        name: Split(split.x, ((split.y - mean) / std).astype(np.float32))
        for name, split in dataset.splits().items()
    }
    return replace(dataset, **splits), (mean, std)


def balanced_class_weights(y, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(torch.as_tensor(y), minlength=num_classes).float()
    return len(y) / (num_classes * counts.clamp_min(1.0))


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
    seed: int | None = None,
    initial: dict | None = None,
) -> tuple[Trainer, Classifier, dict]:
    """``initial``: a whole classifier's state dict to start from (warm start)."""
    cfg = resolve_schedule(cfg, len(train), table=dataset.preprocess is not None)
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    torch.manual_seed(cfg.seed)
    model = Classifier(encoder, dataset.num_outputs)
    if initial is not None:
        model.load_state_dict(initial)
    teacher = None
    if cfg.teacher_uri:
        teacher = load_classifier(from_bytes(ctx.open(cfg.teacher_uri).get_bytes("model.pt")))
    objective = (
        Regression(cfg.regression_loss)
        if dataset.regression
        else Classification(
            cfg.label_smoothing,
            teacher=teacher,
            distill_weight=cfg.distill_weight,
            distill_temperature=cfg.distill_temperature,
            augment=cfg.augment,
            class_weights=balanced_class_weights(materialize(train).y, dataset.num_classes)
            if cfg.class_weights == "balanced"
            else None,
        )
    )
    trainer = classifier_trainer(
        cfg,
        model,
        stage=stage,
        world=world,
        teacher=teacher,
        checkpoints=checkpoint_store(ctx, stage, cfg) if checkpoints else None,
        objective=objective,
    )
    result = trainer.fit(train, dataset.validation)
    return trainer, model, result.to_dict()


def choose_initialization(pretrained: tuple[float, float], scratch: tuple[float, float]) -> str:
    """The initialization that ships, from (validation accuracy, validation log loss) of each:
    the higher accuracy; on a tie (common on small validation splits) the lower log loss."""
    if scratch[0] != pretrained[0]:
        return "scratch" if scratch[0] > pretrained[0] else "pretrained"
    return "scratch" if scratch[1] < pretrained[1] else "pretrained"


def _warm_start(ctx: StageContext, uri: str, dataset: Dataset) -> dict:
    """The payload of the registry version at ``uri``, checked against the data."""
    payload = from_bytes(ctx.open(uri).get_bytes("model.pt"))
    if payload["label_names"] != dataset.label_names:
        raise DataError(
            f"data error: the warm start model {uri} predicts {payload['label_names']} but the "
            f"data has {dataset.label_names}; retrain fully (continual.policy "
            "full_retrain_on_drift) or fix the labels"
        )
    if payload.get("ensemble_size", 1) > 1:
        raise DataError(
            f"data error: the warm start model {uri} is an ensemble of "
            f"{payload['ensemble_size']} networks, which cannot be warm-started; retrain fully "
            "(continual.policy full_retrain_on_drift) or train with finetune.ensemble_size=1"
        )
    return payload


TRAINING_KEYS = (
    "batch_size",
    "steps_per_epoch",
    "steps",
    "warmup_steps",
    "epochs",
    "max_epochs",
    "patience_epochs",
    "best_epoch",
)
"""The shipped network's fine-tuning schedule, as run (model.pt and model.json carry it)."""

MIN_CROSS_FIT_MEMBERS = 3
"""Cross-fit when the ensemble has at least this many networks (the first trains on every row,
the others on all but one of ``members - 1`` folds); smaller ensembles blend on validation."""


def network_predictions(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``[n, classes]``, or values ``[n, 1]`` of a one-output network."""
    out = predict_logits(model.eval().cpu(), x).astype(np.float64)
    return out if out.shape[1] == 1 else softmax(out)


def blend_with_linear(
    network: torch.nn.Module,
    dataset: Dataset,
    train: Split,
    folds: np.ndarray | None,
    out_of_fold: np.ndarray | None,
    *,
    with_trees: bool = False,
) -> tuple[torch.nn.Module, dict]:
    """The network blended with the linear model of the same rows and features (and with
    ``with_trees`` gradient-boosted trees of them), and what was chosen and why. The weights
    are chosen on ``out_of_fold`` network predictions (with linear models and trees fitted on
    the same ``folds``) when there are some, else on the validation split."""
    regression = dataset.regression
    num_classes = None if regression else dataset.num_classes
    validation = materialize(dataset.validation)
    fit = fit_linear(train.x, train.y, validation.x, validation.y, num_classes=num_classes)
    column = (lambda p: p[:, 0]) if regression else (lambda p: p)
    trees_model, trees_info, trees_evidence = None, None, None
    # One class among the labelled rows: nothing for trees to split (the prior is the model).
    with_trees = with_trees and (regression or len(np.unique(train.y)) > 1)
    if with_trees:
        started = time.monotonic()
        trees_model = fit_trees(train.x, train.y, num_classes=num_classes)
        if folds is not None:
            trees_evidence = trees_out_of_fold(train.x, train.y, folds, num_classes=num_classes)
        else:
            trees_evidence = predict(trees_model, validation.x, num_classes)
        trees_info = {
            "model": f"{type(trees_model).__name__} on the preprocessed features",
            "fit_s": round(time.monotonic() - started, 3),
        }
    if folds is not None:
        linear_oof = linear_out_of_fold(
            train.x,
            train.y,
            folds,
            regression=regression,
            strength=fit.strength,
            num_classes=num_classes,
        )
        choice = choose_blend_weight(
            column(out_of_fold), linear_oof, train.y, regression=regression, trees=trees_evidence
        )
        chosen_by = (
            f"out-of-fold predictions of the {len(train)} training rows "
            f"({int(folds.max()) + 1} folds; cross-fitted ensemble members, linear models"
            + (" and trees)" if with_trees else ")")
        )
    else:
        choice = choose_blend_weight(
            column(network_predictions(network, validation.x)),
            fit.predict(validation.x),
            validation.y,
            regression=regression,
            trees=trees_evidence,
        )
        chosen_by = f"the validation split ({len(validation)} rows)"
    weight = choice.weight
    info = {
        "linear_weight": weight,
        "chosen_by": chosen_by,
        "rule": (
            "the most linear weight whose extra loss over the lowest is not significant at 5% "
            f"(within {EVIDENCE_Z} standard errors)"
            + (
                "; trees join when the rule with them (the lowest-loss (linear, trees) pair's "
                "trees weight, the rule above at it) beats the rule without them by more than "
                f"{EVIDENCE_Z} standard errors, both cross-validated over the rows "
                f"({EVIDENCE_FOLDS} folds)"
                if with_trees
                else ""
            )
        ),
        "lowest_loss_weight": choice.lowest_loss_weight,
        "loss": "mean squared error" if regression else "log loss",
        "losses": choice.losses,
        "linear": fit.to_dict(),
    }
    if with_trees:
        info |= {
            "trees_weight": choice.trees_weight,
            "lowest_loss_trees_weight": choice.lowest_loss_trees_weight,
            "trees_lead_z": choice.trees_lead_z,
            "trees": trees_info,
        }
    if weight == 0.0 and choice.trees_weight == 0.0:
        return network, info
    linear = linear_module(fit, math.prod(dataset.feature_shape))
    average = "mean" if regression else "probability"
    trees = tree_module(trees_model, num_classes) if choice.trees_weight > 0 else None
    blended = Blend(network, linear, weight, average, trees=trees, trees_weight=choice.trees_weight)
    return blended.eval(), info


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
                "min_steps": 0,
                "ensemble_size": 1,
            }
        )
    world, device = setup_world(cfg)
    encoded = ctx.load_data(data_uri)
    warm = _warm_start(ctx, warm_start_uri, encoded) if warm_start_uri else None
    scale = tuple(warm["target_scale"]) if warm and warm.get("target_scale") else None
    dataset, target_scale = standardized_targets(with_features(encoded), scale)
    if warm is not None:
        model_cfg, initial = ModelConfig(**warm["model_config"]), warm["state_dict"]
        encoder = build_encoder(model_cfg, dataset.feature_shape)
        label_fraction, train = 1.0, dataset.train
    else:
        model_cfg, initial = ctx.cfg.model, None
        pretrained = from_bytes(ctx.open(pretrain_uri).get_bytes("encoder.pt"))
        if tune_uri and fresh_encoder(ctx.cfg.tune.space) and not ctx.cfg.pretrain.enabled:
            # The search changed the architecture and nothing was pretrained: a fresh
            # encoder, as in the trials.
            torch.manual_seed(cfg.seed)
            encoder = build_encoder(ctx.cfg.model, dataset.feature_shape)
        else:
            encoder = load_encoder(pretrained)
        label_fraction = resolve_label_fraction(cfg, dataset.source)
        train = labelled_subset(dataset.train, label_fraction, cfg.seed)
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

    def classifier(weights: dict) -> Classifier:
        # Fresh modules: under FSDP the trained ones hold sharded parameters.
        model = Classifier(build_encoder(model_cfg, dataset.feature_shape), dataset.num_outputs)
        model.load_state_dict(weights)
        return model.eval()

    final = classifier(state)
    score_name = "r2" if dataset.regression else "accuracy"
    files: dict[str, bytes | dict] = {}
    summary: dict = {
        "task": dataset.task,
        "score": score_name,
        "device": device.type,
        "precision": cfg.precision,
    }
    if comparison is not None:
        scratch = classifier(comparison[0])
        pretrained_val, scratch_val = (
            _scores(final, dataset.validation),
            _scores(scratch, dataset.validation),
        )
        payoff = {
            "labelled_examples": len(train),
            "decided_on": "validation",
            "score": score_name,
            "pretrained_val_score": pretrained_val[0],
            "scratch_val_score": scratch_val[0],
            "pretrained_val_loss": pretrained_val[1],
            "scratch_val_loss": scratch_val[1],
            "pretraining_gain_val": pretrained_val[0] - scratch_val[0],
            "pretrained_test_score": _score(final, dataset.test),
            "scratch_test_score": _score(scratch, dataset.test),
            "initialization": choose_initialization(pretrained_val, scratch_val),
            "scratch_history": comparison[1]["history"],
        }
        payoff["pretraining_gain_test"] = (
            payoff["pretrained_test_score"] - payoff["scratch_test_score"]
        )
        if payoff["initialization"] == "scratch":
            final, state, history = scratch, comparison[0], comparison[1]
        files["pretraining_payoff.json"] = payoff
        summary |= {k: v for k, v in payoff.items() if k != "scratch_history"}
        print(
            f"[finetune] with {len(train)} labels: pretrained {pretrained_val[0]:.4f} vs from "
            f"scratch {scratch_val[0]:.4f} validation {score_name} "
            f"({payoff['pretraining_gain_val']:+.4f}; loss {pretrained_val[1]:.4f} vs "
            f"{scratch_val[1]:.4f}): shipping the {payoff['initialization']} model",
            flush=True,
        )
    members = resolve_ensemble_size(cfg, len(train), encoded.preprocess is not None)
    if world.size > 1:
        # Members train after rank 0 has chosen the initialization; other ranks have left.
        members = 1
    blending = cfg.blend_with_linear and encoded.preprocess is not None and isinstance(train, Split)
    # Cross-fitting: members 2..n train on all but one fold each, so every training row gets a
    # prediction from a network that never saw it (the blend weight's evidence).
    folds = (
        fold_ids(train.y, members - 1, stratify=not dataset.regression)
        if blending and members >= MIN_CROSS_FIT_MEMBERS
        else None
    )
    out_of_fold = None
    if members > 1:
        from_scratch = comparison is not None and summary["initialization"] == "scratch"
        states = [state]
        for k in range(1, members):
            rows = None if folds is None else np.flatnonzero(folds != k - 1)
            member_trainer, _, _ = _train_classifier(
                ctx,
                world,
                build_encoder(ctx.cfg.model, dataset.feature_shape)
                if from_scratch
                else load_encoder(pretrained),
                dataset,
                train if rows is None else train.subset(rows),
                stage=f"finetune-member-{k}",
                checkpoints=False,
                cfg=cfg,
                seed=cfg.seed + 1000 * k,
            )
            states.append(member_trainer.full_state_dict())
            if folds is not None:
                held_out = folds == k - 1
                if out_of_fold is None:
                    out_of_fold = np.zeros(
                        (len(train), 1 if dataset.regression else dataset.num_classes)
                    )
                out_of_fold[held_out] = network_predictions(
                    classifier(states[-1]), train.x[held_out]
                )
        average = "mean" if dataset.regression else "probability"
        final = Ensemble([classifier(s) for s in states], average).eval()
        summary["ensemble_val_score"] = _score(final, dataset.validation)
        print(
            f"[finetune] ensemble of {members} networks"
            + (f" ({members - 1} of them cross-fitted on folds)" if folds is not None else "")
            + f": validation {score_name} {summary['ensemble_val_score']:.4f}",
            flush=True,
        )
    blend_info = None
    if blending:
        network_val_score = _score(final, dataset.validation)
        final, blend_info = blend_with_linear(
            final, dataset, train, folds, out_of_fold, with_trees=cfg.blend_with_trees
        )
        blend_info["network_val_score"] = network_val_score
        blend_info["blend_val_score"] = _score(final, dataset.validation)
        files["blend.json"] = blend_info
        summary["blend"] = {
            k: v for k, v in blend_info.items() if k not in ("losses", "linear", "trees")
        }
        trees_part = (
            f", trees weight {blend_info['trees_weight']:.2f} (lowest loss at "
            f"{blend_info['lowest_loss_weight']:.2f}/{blend_info['lowest_loss_trees_weight']:.2f}"
            f"; the rule with trees {blend_info['trees_lead_z']:.1f} standard errors ahead,"
            f" cross-validated; they join above {EVIDENCE_Z})"
            if "trees_weight" in blend_info
            else f" (lowest loss at {blend_info['lowest_loss_weight']:.2f}; the most linear not "
            "significantly worse)"
        )
        print(
            f"[finetune] blend: linear model weight {blend_info['linear_weight']:.2f}"
            f"{trees_part}, chosen on {blend_info['chosen_by']}; validation {score_name} "
            f"{blend_info['blend_val_score']:.4f} (network alone "
            f"{network_val_score:.4f})",
            flush=True,
        )
    summary["ensemble_size"] = members
    if dataset.regression:
        # Standardized targets: predicting the mean costs 1.0 (their variance).
        baseline_loss, chance_loss = None, 1.0
    else:
        sample = materialize(train)  # a streamed split: a bounded sample for the baseline
        baseline_loss = linear_baseline_train_loss(sample.x, sample.y, dataset.num_classes)
        chance_loss = math.log(dataset.num_classes)
    diagnosis = diagnose(
        history["history"], chance_loss=chance_loss, baseline_train_loss=baseline_loss
    )
    print(f"[finetune] learning curves: {diagnosis.summary_line()}", flush=True)
    last = history["history"][-1]
    summary |= {
        "labelled_examples": len(train),
        "label_fraction": label_fraction,
        "strategy": cfg.strategy,
        "processes": world.size,
        "epochs": len(history["history"]),
        "steps": history["steps"],
        "batch_size": history["batch_size"],
        "steps_per_epoch": history["steps_per_epoch"],
        "warmup_steps": history["warmup_steps"],
        "max_epochs": history["max_epochs"],
        "patience_epochs": history["patience_epochs"],
        "best_epoch": history["best_epoch"],
        "final_train_loss": last["train_loss"],
        "final_val_loss": last["val_loss"],
        f"final_val_{score_name}": _score(final, dataset.validation),
        "samples_per_s": round(history["samples_per_s"], 1),
        "diagnosis": diagnosis.state,
        "linear_baseline_train_loss": baseline_loss,
        "resumed_from_step": history["resumed_from_step"],
    }
    files |= {
        "history.json": history,
        "diagnosis.json": diagnosis.to_dict(),
        "learning_curves.png": learning_curves_png(
            history["history"], "fine-tuning", "neg. MSE" if dataset.regression else "accuracy"
        ),
    }
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
    payload = classifier_payload(
        final,
        model_cfg,
        dataset.feature_shape,
        dataset.label_names,
        preprocess=encoded.preprocess,
        target_scale=target_scale,
        blend=blend_info,
        training={key: summary[key] for key in TRAINING_KEYS},
    )
    writer.put_bytes("model.pt", to_bytes(payload))
    writer.commit(summary=summary)
