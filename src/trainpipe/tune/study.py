"""The search: one optuna study in the artifact store, trial workers in processes and pods.

    outcome = run_search(store, cfg, trial_fn, pod=0)   # this pod's share of the trials
    trials = load_trials(store, cfg)                     # everything every worker recorded

``trial_fn(cfg, report) -> value`` trains one configuration; ``report(epoch, value)`` hands the
per-epoch validation metric to the pruner and raises ``optuna.TrialPruned`` when it says stop.
Workers are named ``w<pod>-<process>``. A worker that starts again under the same name (a pod
retry, a replacement process) first marks the trials its previous life left running as failed,
so a killed trial is recorded and the search goes on; trials that finished are never rerun.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from trainpipe.config import Config
from trainpipe.errors import TrainpipeError
from trainpipe.storage import PreconditionFailed, Store, open_store
from trainpipe.tune.config import TuneConfig, resolve_parallelism
from trainpipe.tune.journal import StoreJournalBackend
from trainpipe.tune.space import apply_params, current_values, grid, grid_size, suggest

STUDY_NAME = "trainpipe"
BASELINE_MARKER = "baseline-enqueued"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TuneError(TrainpipeError):
    """The search could not produce a result (every trial failed, nothing to tune)."""


class TrialFn(Protocol):
    def __call__(self, cfg: Config, report: Callable[[int, float], None]) -> float: ...


def trial_epochs(cfg: Config) -> int:
    return cfg.tune.epochs or cfg.finetune.epochs


def make_sampler(tune: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(grid(tune.space), seed=seed)
    # Few random start-up trials when the budget is small, so the model gets to act.
    startup = max(2, min(10, tune.trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(tune: TuneConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=tune.min_epochs, reduction_factor=tune.reduction_factor
        )
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=tune.min_epochs,
            max_resource=max_epochs,
            reduction_factor=tune.reduction_factor,
        )
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=tune.min_epochs)
    return optuna.pruners.NopPruner()


def open_study(store: Store, cfg: Config, *, seed_offset: int = 0) -> optuna.Study:
    """Create or load the study whose journal lives under ``store`` (``journal/``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = cfg.tune
    storage = optuna.storages.JournalStorage(StoreJournalBackend(store.child("journal")))
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=make_sampler(tune, tune.seed + 1009 * seed_offset),
        pruner=make_pruner(tune, trial_epochs(cfg)),
        direction=tune.resolved_direction,
        load_if_exists=True,
    )


def budget(cfg: Config) -> int:
    """Trials to finish: the configured number, capped by the grid's size for grid search."""
    extra = 1 if cfg.tune.include_default else 0
    if cfg.tune.sampler == "grid":
        return min(cfg.tune.trials, grid_size(cfg.tune.space) + extra)
    return cfg.tune.trials


def fail_orphans(study: optuna.Study, worker: str | None = None) -> list[int]:
    """Mark trials left RUNNING by ``worker`` (every worker when None) as failed."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker is None or trial.user_attrs.get("worker") == worker:
            study._storage.set_trial_user_attr(trial._trial_id, "failure", "worker died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _enqueue_baseline(store: Store, study: optuna.Study, cfg: Config) -> None:
    """The untuned config runs once as a trial, however many workers start at once."""
    if not cfg.tune.include_default:
        return
    try:
        store.put_bytes(BASELINE_MARKER, b"1", if_none_match=True)
    except PreconditionFailed:
        return
    defaults = current_values(cfg, list(cfg.tune.space))
    study.enqueue_trial(defaults, user_attrs={"baseline": True})


@dataclass
class _Objective:
    cfg: Config
    trial_fn: TrialFn
    worker: str

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", self.worker)
        params = suggest(trial, self.cfg.tune.space)
        baseline = bool(trial.user_attrs.get("baseline"))
        started = time.monotonic()
        try:
            return self._run(trial, params, baseline, started)
        except TrainpipeError as exc:
            # A user-level failure (a combination the config rejects, a non-finite loss) is
            # one line, not a traceback; NaN makes optuna record the trial as failed.
            trial.set_user_attr("failure", str(exc))
            self._say(trial, f"failed: {exc}", params)
            return math.nan

    def _run(
        self, trial: optuna.Trial, params: dict[str, Any], baseline: bool, started: float
    ) -> float:
        trial_cfg = apply_params(self.cfg, params)

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            trial.set_user_attr("epochs", epoch)
            # The baseline always runs to the end: it is what the gain is measured against.
            if not baseline and trial.should_prune():
                trial.set_user_attr("wall_s", round(time.monotonic() - started, 3))
                self._say(trial, f"pruned at epoch {epoch} ({value:.4f})", params)
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        value = self.trial_fn(trial_cfg, report)
        trial.set_user_attr("wall_s", round(time.monotonic() - started, 3))
        self._say(trial, f"{self.cfg.tune.metric} {value:.4f}", params)
        return value

    def _say(self, trial: optuna.Trial, outcome: str, params: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in params.items()
        )
        print(f"[tune] trial #{trial.number} ({self.worker}): {outcome}; {shown}", flush=True)


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def run_worker(
    store: Store, cfg: Config, trial_fn: TrialFn, *, worker: str, seed_offset: int = 0
) -> None:
    """Run trials until the study has its budget of finished (or running) trials."""
    study = open_study(store, cfg, seed_offset=seed_offset)
    fail_orphans(study, worker)
    _enqueue_baseline(store, study, cfg)
    objective = _Objective(cfg, trial_fn, worker)
    deadline = time.monotonic() + cfg.tune.timeout_s if cfg.tune.timeout_s else math.inf
    target = budget(cfg)
    while time.monotonic() < deadline:
        counts = _counts(study)
        started = sum(counts[s] for s in (*FINISHED, TrialState.RUNNING))
        if started >= target:
            return
        if counts[TrialState.FAIL] >= target:
            raise TuneError(
                f"{counts[TrialState.FAIL]} trials failed (the reasons are in the log above); "
                "fix the config or the search space and run again"
            )
        # A failing trial (bad parameter combination, non-finite loss) is recorded as FAIL
        # and the search goes on.
        study.optimize(objective, n_trials=1, catch=(Exception,))


@dataclass
class WorkerSpec:
    store_uri: str
    endpoint_url: str | None
    config_json: str
    trial_fn: TrialFn
    worker: str
    seed_offset: int
    threads: int


def _worker_main(spec: WorkerSpec) -> None:
    import torch

    torch.set_num_threads(spec.threads)
    store = open_store(spec.store_uri, endpoint_url=spec.endpoint_url)
    try:
        run_worker(
            store,
            Config.from_json(spec.config_json),
            spec.trial_fn,
            worker=spec.worker,
            seed_offset=spec.seed_offset,
        )
    except TrainpipeError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class _Slot:
    spec: WorkerSpec
    process: Any = None
    restarts: int = 0


def run_search(
    store: Store,
    cfg: Config,
    trial_fn: TrialFn,
    *,
    pod: int = 0,
    processes: int | None = None,
    max_restarts: int = 3,
) -> None:
    """This pod's trial workers: in this process when one, else spawned processes (one GPU
    each when GPUs are visible). A worker process that dies is replaced, under its name."""
    count = processes or resolve_parallelism(cfg.tune.parallelism)
    count = min(count, budget(cfg))
    if count <= 1:
        run_worker(store, cfg, trial_fn, worker=f"w{pod}-0", seed_offset=pod * 1000)
        return
    threads = max(1, len(os.sched_getaffinity(0)) // count)
    endpoint = store.endpoint_url  # the store carries the endpoint it was opened with
    slots = [
        _Slot(
            WorkerSpec(
                store.uri,
                endpoint,
                cfg.to_json(),
                trial_fn,
                f"w{pod}-{i}",
                pod * 1000 + i,
                threads,
            )
        )
        for i in range(count)
    ]
    gpus = _visible_gpus()
    context = multiprocessing.get_context("spawn")

    def start(index: int, slot: _Slot) -> None:
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus > 1:  # spawned children inherit the environment: pin one GPU each
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        try:
            slot.process = context.Process(target=_worker_main, args=(slot.spec,), daemon=True)
            slot.process.start()
        finally:
            if gpus > 1:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous

    for index, slot in enumerate(slots):
        start(index, slot)
    errors: list[str] = []
    try:
        while any(slot.process is not None for slot in slots):
            time.sleep(0.2)
            for index, slot in enumerate(slots):
                process = slot.process
                if process is None or process.is_alive():
                    continue
                process.join()
                slot.process = None
                if process.exitcode == 0:
                    continue
                if process.exitcode == 1:  # a TrainpipeError, already printed
                    errors.append(slot.spec.worker)
                    continue
                study = open_study(store, cfg)
                lost = fail_orphans(study, slot.spec.worker)
                print(
                    f"[tune] worker {slot.spec.worker} died (exit {process.exitcode}); "
                    f"trials {lost} recorded as failed",
                    file=sys.stderr,
                    flush=True,
                )
                if slot.restarts < max_restarts:
                    slot.restarts += 1
                    start(index, slot)
    finally:
        for slot in slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
                slot.process.join()
    if errors and len(errors) == len(slots):
        raise TuneError(f"every tune worker failed ({', '.join(errors)}); see the lines above")


@dataclass
class TrialRecord:
    """One trial as the report and the summary show it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int
    wall_s: float | None
    baseline: bool
    worker: str
    intermediate: dict[int, float] = field(default_factory=dict)
    failure: str | None = None

    def to_dict(self) -> dict:
        return self.__dict__ | {"intermediate": {str(k): v for k, v in self.intermediate.items()}}


def load_trials(store: Store, cfg: Config) -> list[TrialRecord]:
    study = open_study(store, cfg)
    fail_orphans(study)  # every worker has finished when the results are read
    records = []
    for trial in study.get_trials(deepcopy=False):
        records.append(
            TrialRecord(
                number=trial.number,
                state=trial.state.name.lower(),
                value=trial.value if trial.state == TrialState.COMPLETE else None,
                params=dict(trial.params),
                epochs=int(trial.user_attrs.get("epochs", 0)),
                wall_s=trial.user_attrs.get("wall_s"),
                baseline=bool(trial.user_attrs.get("baseline")),
                worker=str(trial.user_attrs.get("worker", "")),
                intermediate=dict(trial.intermediate_values),
                failure=trial.user_attrs.get("failure"),
            )
        )
    return records


def param_importance(store: Store, cfg: Config) -> dict[str, float]:
    """fANOVA importance over completed trials; empty when too few to say."""
    study = open_study(store, cfg)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3 or len(cfg.tune.space) < 2:
        return {}
    try:
        importance = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=cfg.tune.seed)
        )
    except (RuntimeError, ValueError):
        return {}  # e.g. every completed trial has the same parameters
    return {k: float(v) for k, v in importance.items()}
