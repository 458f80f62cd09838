"""tune: search fine-tuning hyperparameters, before the finetune stage.

Two steps, so a cluster can fan the trials out: ``run_tune_worker`` (one per pod, in a KFP
ParallelFor) runs trials in ``tune.parallelism`` processes against one optuna study whose
journal lives in the artifact store (``runs/<run_id>/tune-study/``); ``run_tune`` then reads
the study and commits the ``tune`` artifact set: ``best.json`` (what finetune takes),
``trials.json``, ``importance.json`` and ``report.html``.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime

from trainpipe.data.datasets import with_features
from trainpipe.stages.context import StageContext, make_context, run_prefix
from trainpipe.storage import PreconditionFailed, Store
from trainpipe.tune import pbt
from trainpipe.tune.report import tuning_html
from trainpipe.tune.result import summarize
from trainpipe.tune.space import fresh_encoder, searches_pretraining
from trainpipe.tune.study import load_trials, param_importance, run_search, trial_epochs
from trainpipe.tune.trial import FinetuneTrial

STARTED_KEY = "started.json"


def study_store(ctx: StageContext) -> Store:
    return ctx.store.child(f"{run_prefix(ctx.run_id)}/tune-study")


def _trial(ctx: StageContext, data_uri: str, pretrain_uri: str) -> FinetuneTrial:
    cfg = ctx.cfg
    # Searched architecture or pretraining keys: each trial builds (and pretrains) its encoder.
    fresh = fresh_encoder(cfg.tune.space)
    encoder = None if fresh else ctx.open(pretrain_uri).get_bytes("encoder.pt")
    teacher = None
    if cfg.finetune.teacher_uri:
        teacher = ctx.open(cfg.finetune.teacher_uri).get_bytes("model.pt")
    return FinetuneTrial(
        with_features(ctx.load_data(data_uri)),
        encoder,
        trial_epochs(cfg),
        teacher,
        pretrain=searches_pretraining(cfg.tune.space),
    )


def run_tune_worker(
    config_json: str, run_id: str, data_uri: str, pretrain_uri: str, pod: int = 0
) -> str:
    """This pod's share of the trials; returns the study's location."""
    ctx = make_context(config_json, run_id)
    store = study_store(ctx)
    # The first worker's start is the stage's start (its manifest's wall time).
    with contextlib.suppress(PreconditionFailed):
        store.put_json(STARTED_KEY, {"at": ctx.started_at.isoformat()}, if_none_match=True)
    trial = _trial(ctx, data_uri, pretrain_uri)
    if ctx.cfg.tune.strategy == "pbt":
        if pod == 0:  # the population steps in lockstep, so one pod drives it
            pbt.run_pbt(store, ctx.cfg, trial.segment)
    else:
        run_search(store, ctx.cfg, trial, pod=int(pod))
    return store.uri


def run_tune(
    config_json: str, run_id: str, data_uri: str, pretrain_uri: str, metrics=None, report=None
) -> str:
    """Collect every worker's trials into the tune artifact set; returns its URI."""
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg
    store = study_store(ctx)
    if store.exists(STARTED_KEY):
        started = datetime.fromisoformat(store.get_json(STARTED_KEY)["at"])
        elapsed_s = (ctx.started_at - started).total_seconds()
        ctx = replace(ctx, started_at=started, started_monotonic=ctx.started_monotonic - elapsed_s)
    if cfg.tune.strategy == "pbt":
        trials, importance = pbt.load_records(store, cfg), {}
    else:
        trials, importance = load_trials(store, cfg), param_importance(store, cfg)
    best = summarize(trials, cfg)
    trial_dicts = [t.to_dict() for t in trials]
    page = tuning_html(best, trial_dicts, importance)
    gain = (
        ""
        if best["gain"] is None
        else f" (default {best['baseline_value']:.4f}, gain {best['gain']:+.4f})"
    )
    print(
        f"[tune] best trial #{best['trial']} of {best['trials']}: {best['metric']} "
        f"{best['value']:.4f}{gain}; {best['pruned']} pruned, {best['failed']} failed, "
        f"{best['epochs_run']}/{best['epochs_budget']} epochs",
        flush=True,
    )
    inputs = {"data": data_uri} | ({"pretrain": pretrain_uri} if pretrain_uri else {})
    writer = ctx.writer("tune", inputs=inputs)
    writer.put_json("best.json", best)
    writer.put_json("trials.json", {"trials": trial_dicts})
    writer.put_json("importance.json", importance)
    writer.put_text("report.html", page)
    summary = {k: v for k, v in best.items() if k != "default_params"}
    uri = writer.commit(summary=summary)
    if metrics is not None:
        metrics.log_metric(f"best_{best['metric']}", round(best["value"], 5))
        if best["gain"] is not None:
            metrics.log_metric(f"default_{best['metric']}", round(best["baseline_value"], 5))
            metrics.log_metric("gain", round(best["gain"], 5))
        for name in ("trial", "trials", "pruned", "failed", "epochs_run"):
            metrics.log_metric(name, best[name])
        for key, value in best["params"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.log_metric(f"param_{key}", value)
    if report is not None:
        with open(report.path, "w") as f:
            f.write(page)
    return uri
