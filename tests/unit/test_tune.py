"""The hyperparameter search engine on synthetic objectives (fast) and tiny real trials.

Synthetic objectives stand in for training where the behaviour under test is the search
itself (sampler, pruner, budget, failures, resume); the study always lives in a real artifact
store (a directory through FileStore), shared by real processes where parallelism is tested.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from trainpipe.config import load_config
from trainpipe.data.datasets import Dataset, Split
from trainpipe.errors import ConfigError
from trainpipe.storage import open_store
from trainpipe.tune import pbt
from trainpipe.tune.result import summarize
from trainpipe.tune.space import apply_params
from trainpipe.tune.study import load_trials, open_study, run_search, run_worker
from trainpipe.tune.trial import FinetuneTrial

LR_SPACE = "tune.space={finetune.lr: {type: log_uniform, low: 1.0e-5, high: 1.0}, " + (
    "finetune.label_smoothing: {type: uniform, low: 0.0, high: 0.5}}"
)


def config(*overrides: str):
    return load_config(None, ["tune.enabled=true", LR_SPACE, *overrides])


def quality(cfg) -> float:
    """Peak 1.0 at lr=1e-2, label_smoothing=0.1."""
    lr, smoothing = cfg.finetune.lr, cfg.finetune.label_smoothing
    return 1.0 - 0.1 * (math.log10(lr) + 2) ** 2 - 4 * (smoothing - 0.1) ** 2


def synthetic(cfg, report) -> float:
    """Learning curves that rise towards the configuration's quality, ranked from epoch 1."""
    epochs = cfg.tune.epochs
    value = 0.0
    for epoch in range(1, epochs + 1):
        value = quality(cfg) * (1 - 0.5**epoch)
        report(epoch, value)
    return value


@dataclass
class CountingObjective:
    """Appends one line per trial started to ``log`` (shared by processes)."""

    log: str
    seconds: float = 0.0  # per trial, so parallel workers overlap

    def __call__(self, cfg, report) -> float:
        with open(self.log, "a") as f:
            f.write(f"{cfg.finetune.lr}\n")
        time.sleep(self.seconds)
        return synthetic(cfg, report)


@dataclass
class DiesOnce:
    """The first trial to start kills its own process (SIGKILL): a pod or OOM kill."""

    marker: str

    def __call__(self, cfg, report) -> float:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return synthetic(cfg, report)
        os.close(fd)
        report(1, 0.0)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def test_tpe_finds_the_optimum_region(tmp_path):
    cfg = config("tune.trials=30", "tune.epochs=1", "tune.pruner=none", "tune.sampler=tpe")
    store = open_store(str(tmp_path))
    run_search(store, cfg, synthetic, processes=1)
    best = summarize(load_trials(store, cfg), cfg)
    assert best["complete"] == 30
    assert 10**-2.6 < best["params"]["finetune.lr"] < 10**-1.4
    assert abs(best["params"]["finetune.label_smoothing"] - 0.1) < 0.12
    assert best["gain"] > 0  # the default (lr 2e-3, smoothing 0) is not the optimum


def test_asha_prunes_and_saves_epochs(tmp_path):
    epochs, trials = 9, 24
    common = [f"tune.trials={trials}", f"tune.epochs={epochs}", "tune.sampler=random"]
    results = {}
    for pruner in ("none", "asha"):
        cfg = config(*common, f"tune.pruner={pruner}")
        store = open_store(str(tmp_path / pruner))
        run_search(store, cfg, synthetic, processes=1)
        results[pruner] = summarize(load_trials(store, cfg), cfg)
    unpruned, asha = results["none"], results["asha"]
    assert unpruned["epochs_run"] == trials * epochs
    assert asha["pruned"] >= trials // 2
    assert asha["epochs_run"] <= unpruned["epochs_run"] / 2
    # Same seed, same draws: ASHA keeps the best configuration running to the end.
    assert asha["value"] == pytest.approx(unpruned["value"], abs=0.005)
    baseline = next(t for t in load_trials(open_store(str(tmp_path / "asha")), cfg) if t.baseline)
    assert baseline.state == "complete" and baseline.epochs == epochs  # never pruned


def test_a_killed_trial_is_failed_and_the_search_goes_on(tmp_path):
    cfg = config("tune.trials=6", "tune.epochs=2", "tune.pruner=none", "tune.sampler=random")
    store = open_store(str(tmp_path / "store"))
    run_search(store, cfg, DiesOnce(str(tmp_path / "died")), processes=2)
    trials = load_trials(store, cfg)
    states = [t.state for t in trials]
    assert states.count("fail") == 1
    assert states.count("complete") == 6
    failed = next(t for t in trials if t.state == "fail")
    assert failed.intermediate == {1: 0.0}  # what it reported before dying was kept


def test_an_interrupted_study_resumes_without_repeating_trials(tmp_path):
    store = open_store(str(tmp_path / "store"))
    log = tmp_path / "started.log"
    cfg = config("tune.trials=3", "tune.epochs=2", "tune.pruner=none", "tune.sampler=random")
    run_worker(store, cfg, CountingObjective(str(log)), worker="w0-0")
    # The worker is killed mid-trial: a trial it owned stays RUNNING in the journal.
    study = open_study(store, cfg)
    orphan = study.ask()
    orphan.set_user_attr("worker", "w0-0")
    # Restarted under its name (a pod retry) with a larger budget: the orphan is failed,
    # finished trials are kept, only the missing ones run.
    cfg = config("tune.trials=5", "tune.epochs=2", "tune.pruner=none", "tune.sampler=random")
    run_worker(store, cfg, CountingObjective(str(log)), worker="w0-0")
    assert len(log.read_text().splitlines()) == 5
    trials = load_trials(store, cfg)
    assert [t.state for t in trials].count("complete") == 5
    assert next(t for t in trials if t.number == orphan.number).state == "fail"
    run_worker(store, cfg, CountingObjective(str(log)), worker="w0-0")
    assert len(log.read_text().splitlines()) == 5  # nothing left to do


def test_workers_share_one_budget_across_processes(tmp_path):
    store = open_store(str(tmp_path / "store"))
    log = tmp_path / "started.log"
    cfg = config("tune.trials=6", "tune.epochs=1", "tune.pruner=none", "tune.sampler=random")
    run_search(store, cfg, CountingObjective(str(log), seconds=1.0), processes=2)
    trials = load_trials(store, cfg)
    workers = {t.worker for t in trials}
    assert workers == {"w0-0", "w0-1"}
    assert 6 <= len(trials) <= 7  # two workers may both start the last trial
    assert len({t.params["finetune.lr"] for t in trials}) == len(trials)  # no repeated draws


def segment(cfg, state, epochs):
    """A PBT member whose 'weights' are one number that grows by its lr each epoch."""
    weight = json.loads(state)["w"] if state else 0.0
    history = []
    for epoch in range(1, epochs + 1):
        weight += cfg.finetune.lr
        history.append({"epoch": epoch, "val_loss": -weight, "val_metric": weight})
    return json.dumps({"w": weight}).encode(), history


def test_pbt_copies_weights_from_a_better_member(tmp_path):
    cfg = config(
        "tune.strategy=pbt",
        "tune.epochs=4",
        "tune.pbt.interval_epochs=2",
        "tune.pbt.population=4",
        "tune.pbt.quantile=0.25",
        "tune.pbt.resample_probability=0.0",
    )
    store = open_store(str(tmp_path))
    members = pbt.run_pbt(store, cfg, segment, processes=1)
    state = store.get_json(pbt.STATE_KEY)
    copied = [m for m in state["members"] if m["events"]]
    assert len(copied) == 1
    member = copied[0]
    event = member["events"][0]
    donor = state["members"][event["copied_from"]]
    weight = lambda m, r: json.loads(store.get_bytes(f"pbt/weights/member-{m}-round-{r}.pt"))["w"]  # noqa: E731
    # The member restarted from the donor's round-0 weights, with the perturbed lr.
    lr = event["params"]["finetune.lr"]
    assert weight(member["id"], 1) == pytest.approx(weight(donor["id"], 0) + 2 * lr)
    ratio = lr / donor["params"]["finetune.lr"]
    assert any(ratio == pytest.approx(f) for f in (0.8, 1.25)) or lr in (1e-5, 1.0)
    assert donor["values"][0] == max(m["values"][0] for m in state["members"])
    # The baseline (member 0) is never replaced.
    assert not state["members"][0]["events"]
    best = summarize(members, cfg)
    assert best["epochs_run"] == 4 * 4


def test_pbt_resumes_at_the_round_it_was_in(tmp_path):
    cfg = config(
        "tune.strategy=pbt", "tune.epochs=4", "tune.pbt.interval_epochs=2", "tune.pbt.population=3"
    )
    store = open_store(str(tmp_path))
    pbt.run_pbt(store, cfg, segment, processes=1)
    before = store.get_json(pbt.STATE_KEY)
    assert before["round"] == 2
    again = pbt.run_pbt(store, cfg, segment, processes=1)  # nothing left: same result
    assert [m.value for m in again] == [m["values"][-1] for m in before["members"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.space={finetune.nope: {type: uniform, low: 0, high: 1}}"], "'nope' is not"),
        (["tune.space={model.depth: {type: int, low: 1, high: 3}}"], "pretrain.enabled=false"),
        (["tune.space={finetune.lr: {type: uniform, low: 0.001, high: 20}}"], "20.0 is not valid"),
        (
            ["tune.space={finetune.batch_size: {type: categorical, choices: [8, 16]}}"],
            "does not contain the current value None",
        ),
        (["tune.space={finetune.lr: {type: log_uniform, low: 0, high: 1}}"], "low > 0"),
        (["tune.space={data.source: {type: categorical, choices: [digits]}}"], "not tunable"),
    ],
)
def test_bad_search_spaces_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, ["tune.enabled=true", *overrides])
    assert "\n" not in str(info.value)


def test_apply_params_validates_the_combination():
    cfg = load_config(None, ["finetune.grad_accumulation_steps=4"])
    assert apply_params(cfg, {"finetune.lr": 0.5}).finetune.lr == 0.5
    with pytest.raises(ConfigError, match="not divisible"):
        apply_params(cfg, {"finetune.batch_size": 30})


def blobs(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None].astype(np.float32) * 1.5
    return Split(x, y.astype(np.int64))


def test_finetune_trials_report_every_epoch_and_train_through_the_trainer(tmp_path):
    dataset = Dataset(blobs(300, 0), blobs(100, 1), blobs(100, 2), ["a", "b", "c"], [4], "blobs")
    trial = FinetuneTrial(dataset, None, epochs=3)
    cfg = config(
        "pretrain.enabled=false",
        "model.hidden_dim=16",
        "finetune.label_fraction=1.0",
        "finetune.lr=0.02",
        "finetune.batch_size=32",
    )
    reported = []
    value = trial(cfg, lambda epoch, v: reported.append((epoch, v)))
    assert [e for e, _ in reported] == [1, 2, 3]
    assert value == reported[-1][1] and value > 0.6
    # A pruner stops the trial from the hook: training ends at that epoch.
    with pytest.raises(optuna.TrialPruned):
        trial(cfg, lambda epoch, v: (_ for _ in ()).throw(optuna.TrialPruned()))
    weights, history = trial.segment(cfg, None, 2)
    # Continuing at a tiny rate starts where the segment ended, not from scratch.
    _, resumed = trial.segment(apply_params(cfg, {"finetune.lr": 1e-5}), weights, 1)
    assert len(history) == 2
    assert resumed[0]["val_loss"] == pytest.approx(history[-1]["val_loss"], abs=0.01)
    assert abs(resumed[0]["val_loss"] - history[0]["val_loss"]) > 0.05


def test_parallel_trials_run_in_the_pod_journal_layout(tmp_path):
    """The journal is numbered objects written put-if-absent; nothing else in the prefix."""
    cfg = config("tune.trials=2", "tune.epochs=1", "tune.pruner=none")
    store = open_store(str(tmp_path))
    run_search(store, cfg, synthetic, processes=1)
    keys = [k for k in store.list("journal/")]
    assert keys and all(Path(k).stem.isdigit() and len(Path(k).stem) == 10 for k in keys)


def test_the_journal_orders_concurrent_appends_over_s3(s3_bucket, s3_endpoint):
    """Writers racing for the same journal number on a real S3 protocol server: each batch
    lands exactly once, and every reader sees the same order."""
    from concurrent.futures import ThreadPoolExecutor

    from trainpipe.tune.journal import StoreJournalBackend

    def writer(index: int) -> None:
        backend = StoreJournalBackend(open_store(f"{s3_bucket}/journal", endpoint_url=s3_endpoint))
        for i in range(8):
            backend.append_logs([{"writer": index, "i": i}])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    journal = open_store(f"{s3_bucket}/journal", endpoint_url=s3_endpoint)
    logs = StoreJournalBackend(journal).read_logs(0)
    assert sorted((log["writer"], log["i"]) for log in logs) == [
        (w, i) for w in range(4) for i in range(8)
    ]
    for w in range(4):  # each writer's batches keep their own order
        assert [log["i"] for log in logs if log["writer"] == w] == list(range(8))
    assert StoreJournalBackend(journal).read_logs(30) == logs[30:]


def test_processes_share_a_study_in_s3(s3_bucket, s3_endpoint):
    """The worker processes reach the S3 endpoint the store was opened with (not exported)."""
    cfg = config("tune.trials=4", "tune.epochs=1", "tune.pruner=none", "tune.sampler=random")
    store = open_store(f"{s3_bucket}/study", endpoint_url=s3_endpoint)
    run_search(store, cfg, CountingObjective(os.devnull, seconds=1.0), processes=2)
    trials = load_trials(store, cfg)
    assert [t.state for t in trials].count("complete") >= 4
    assert {t.worker for t in trials} == {"w0-0", "w0-1"}


@pytest.mark.parametrize("pruner", ["hyperband", "median"])
def test_other_pruners_stop_bad_trials_early(tmp_path, pruner):
    epochs, trials = 9, 16
    cfg = config(
        f"tune.trials={trials}",
        f"tune.epochs={epochs}",
        "tune.sampler=random",
        f"tune.pruner={pruner}",
    )
    store = open_store(str(tmp_path))
    run_search(store, cfg, synthetic, processes=1)
    result = summarize(load_trials(store, cfg), cfg)
    assert result["pruned"] >= 3
    assert result["epochs_run"] < trials * epochs


def test_grid_search_visits_each_point_once(tmp_path):
    cfg = config(
        "tune.sampler=grid",
        "finetune.batch_size=64",  # the untuned trial's value must be a grid point
        "tune.trials=100",
        "tune.epochs=1",
        "tune.pruner=none",
        "tune.space={finetune.batch_size: {type: categorical, choices: [32, 64]}, "
        "finetune.lr: {type: log_uniform, low: 1.0e-3, high: 1.0e-1, grid_points: 3}}",
    )
    store = open_store(str(tmp_path))
    run_search(store, cfg, synthetic, processes=1)
    trials = load_trials(store, cfg)
    searched = [t for t in trials if not t.baseline]
    assert len(searched) == 6  # the budget is capped at the grid's size
    points = {
        (t.params["finetune.batch_size"], round(t.params["finetune.lr"], 6)) for t in searched
    }
    assert points == {(b, lr) for b in (32, 64) for lr in (0.001, 0.01, 0.1)}


def always_fails(cfg, report) -> float:
    from trainpipe.errors import TrainingError

    raise TrainingError("non-finite loss at step 3")


def test_a_search_where_every_trial_fails_stops_with_one_line(tmp_path):
    from trainpipe.tune.study import TuneError

    cfg = config("tune.trials=3", "tune.epochs=1")
    store = open_store(str(tmp_path))
    with pytest.raises(TuneError, match="3 trials failed") as info:
        run_worker(store, cfg, always_fails, worker="w0-0")
    assert "\n" not in str(info.value)
    trials = load_trials(store, cfg)
    assert {t.failure for t in trials} == {"non-finite loss at step 3"}
    with pytest.raises(TuneError, match="no trial completed"):
        summarize(trials, cfg)


def test_the_report_shows_every_trial(tmp_path):
    from trainpipe.tune.report import best_so_far, tuning_html
    from trainpipe.tune.study import param_importance

    cfg = config("tune.trials=8", "tune.epochs=3", "tune.sampler=random")
    store = open_store(str(tmp_path))
    run_search(store, cfg, synthetic, processes=1)
    trials = [t.to_dict() for t in load_trials(store, cfg)]
    best = summarize(load_trials(store, cfg), cfg)
    importance = param_importance(store, cfg)
    assert set(importance) == {"finetune.lr", "finetune.label_smoothing"}
    page = tuning_html(best, trials, importance)
    assert page.count("<tr class=") == len(trials)
    assert "complete (default)" in page and "Parameter importance" in page
    assert ("class='pruned'" in page) == (best["pruned"] > 0)
    curve = best_so_far(trials, maximize=True)
    assert [v for _, v in curve] == sorted(v for _, v in curve)  # never gets worse
    assert curve[-1][1] == best["value"]


def test_the_time_budget_stops_new_trials(tmp_path):
    cfg = config("tune.trials=100", "tune.epochs=1", "tune.timeout_s=1.5", "tune.pruner=none")
    log = tmp_path / "started.log"
    run_worker(open_store(str(tmp_path / "s")), cfg, CountingObjective(str(log), 0.5), worker="w")
    assert 2 <= len(log.read_text().splitlines()) <= 4


def test_trainpipe_tune_rejects_a_bad_space_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainpipe",
            "tune",
            "--output",
            str(tmp_path),
            "--set",
            "tune.space={finetune.lrr: {type: uniform, low: 0.1, high: 1}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "trainpipe: config error: tune.space key 'finetune.lrr': 'lrr' is not a config key; "
        "allowed here: epochs, batch_size,"
    )
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_pretraining_keys_make_each_trial_pretrain(tmp_path):
    dataset = Dataset(blobs(300, 0), blobs(100, 1), blobs(100, 2), ["a", "b", "c"], [4], "blobs")
    space = (
        "tune.space={pretrain.lr: {type: log_uniform, low: 1.0e-4, high: 1.0e-1}, "
        "model.hidden_dim: {type: categorical, choices: [16, 32]}}"
    )
    cfg = load_config(
        None,
        [
            "tune.enabled=true",
            space,
            "pretrain.objective=masked_reconstruction",
            "pretrain.epochs=2",
            "tune.metric=val_loss",
            "model.hidden_dim=16",
            "finetune.label_fraction=1.0",
        ],
    )
    trial = FinetuneTrial(dataset, None, epochs=2, pretrain=True)
    values = {}
    for lr in (1e-4, 1e-1):
        reported: list[int] = []
        values[lr] = trial(
            apply_params(cfg, {"pretrain.lr": lr}), lambda e, v, r=reported: r.append(e)
        )
        assert reported == [1, 2]
    assert values[1e-4] != values[1e-1]  # the pretraining parameter reaches the trial


def test_a_search_over_pretraining_runs_before_pretrain(tmp_path):
    from tests.integration.test_compile import load_ir, walk_tasks
    from trainpipe.local_run import stages_of
    from trainpipe.pipelines.training import compile_pipeline

    cfg = config("tune.space={pretrain.lr: {type: log_uniform, low: 1.0e-4, high: 1.0e-1}}")
    assert stages_of(cfg)[:4] == ("validate_data", "tune", "pretrain", "finetune")
    assert stages_of(cfg, tune_only=True) == ("validate_data", "tune")
    path = tmp_path / "pipeline.yaml"
    compile_pipeline(cfg, str(path))
    tasks = walk_tasks(load_ir(path)[0])
    pretrain_tune = tasks["pretrain"]["inputs"]["parameters"]["tune_uri"]["taskOutputParameter"]
    finetune_tune = tasks["finetune"]["inputs"]["parameters"]["tune_uri"]["taskOutputParameter"]
    assert pretrain_tune["producerTask"] == finetune_tune["producerTask"] == "tune-search"
    assert "pretrain" not in str(tasks["tune-search"]["inputs"]["parameters"]["pretrain_uri"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.space={pretrain.enabled: {type: categorical, choices: [true]}}"], "not search"),
        (
            [
                "pretrain.enabled=false",
                "tune.space={pretrain.lr: {type: uniform, low: 0.001, high: 0.01}}",
            ],
            "pretrain.enabled=true",
        ),
        (
            [
                "tune.strategy=pbt",
                "tune.space={pretrain.lr: {type: uniform, low: 0.001, high: 0.01}}",
            ],
            "strategy pbt adapts fine-tuning only",
        ),
    ],
)
def test_pretraining_search_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["tune.enabled=true", *overrides])
    # Architecture keys are fine once every trial pretrains its own encoder.
    load_config(
        None,
        [
            "tune.enabled=true",
            "tune.space={pretrain.lr: {type: uniform, low: "
            "0.001, high: 0.01}, model.depth: {type: int, low: 1, high: 3}}",
        ],
    )
