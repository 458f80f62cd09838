"""Population-based training, which optuna does not offer.

A population of members trains side by side in segments of ``pbt.interval_epochs``. After
each segment the members are ranked on the validation metric; each member of the bottom
``quantile`` copies the weights (through the artifact store) and parameters of a random member
of the top ``quantile`` (exploit) and perturbs the parameters (explore). The untuned member,
when included, is neither copied over nor perturbed: it is the baseline.

The population's state is written to the store after every segment, so an interrupted run
resumes at the segment it was in.

    members = run_pbt(store, cfg, trial.segment)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from trainpipe.config import Config
from trainpipe.storage import ArtifactNotFound, Store
from trainpipe.tune.config import resolve_parallelism
from trainpipe.tune.space import apply_params, current_values, perturb, sample
from trainpipe.tune.study import TrialRecord, TuneError, trial_epochs

SegmentFn = Callable[[Config, bytes | None, int], tuple[bytes, list[dict]]]
STATE_KEY = "pbt/state.json"


def _score(history: list[dict], metric: str) -> float:
    last = history[-1]
    return last["val_loss"] if metric == "val_loss" else last["val_metric"]


def _initial_state(cfg: Config) -> dict[str, Any]:
    rng = random.Random(cfg.tune.seed)
    members = []
    for i in range(cfg.tune.pbt.population):
        baseline = cfg.tune.include_default and i == 0
        params = current_values(cfg, list(cfg.tune.space)) if baseline else None
        members.append(
            {
                "id": i,
                "params": params or sample(cfg.tune.space, rng),
                "weights": None,
                "baseline": baseline,
                "values": [],
                "epochs": 0,
                "events": [],
            }
        )
    return {"round": 0, "members": members}


def _train_member(segment_fn: SegmentFn, cfg_json: str, weights: bytes | None, epochs: int):
    return segment_fn(Config.from_json(cfg_json), weights, epochs)


def exploit_and_explore(state: dict[str, Any], cfg: Config, rng: random.Random) -> None:
    """Rank by the last segment; the bottom quantile takes over a top member's weights and
    perturbed parameters."""
    maximize = cfg.tune.resolved_direction == "maximize"
    ranked = sorted(state["members"], key=lambda m: m["values"][-1], reverse=maximize)  # best first
    size = max(1, int(len(ranked) * cfg.tune.pbt.quantile))
    top, bottom = ranked[:size], ranked[-size:]
    for member in bottom:
        if member["baseline"] or member in top:
            continue
        donor = rng.choice(top)
        member["weights"] = donor["weights"]
        member["params"] = perturb(donor["params"], cfg.tune.space, cfg.tune.pbt, rng)
        member["events"].append(
            {"round": state["round"], "copied_from": donor["id"], "params": member["params"]}
        )


def run_pbt(
    store: Store, cfg: Config, segment_fn: SegmentFn, *, processes: int | None = None
) -> list[TrialRecord]:
    tune = cfg.tune
    try:
        state = store.get_json(STATE_KEY)
    except ArtifactNotFound:
        state = _initial_state(cfg)
    rounds = math.ceil(trial_epochs(cfg) / tune.pbt.interval_epochs)
    count = min(processes or resolve_parallelism(tune.parallelism), tune.pbt.population)
    executor = ProcessPoolExecutor(count, mp_context=get_context("spawn")) if count > 1 else None
    try:
        while state["round"] < rounds:
            rng = random.Random(tune.seed * 7919 + state["round"])
            epochs = min(
                tune.pbt.interval_epochs,
                trial_epochs(cfg) - state["round"] * tune.pbt.interval_epochs,
            )
            jobs = []
            for member in state["members"]:
                member_cfg = apply_params(cfg, member["params"]).to_json()
                weights = store.get_bytes(member["weights"]) if member["weights"] else None
                args = (segment_fn, member_cfg, weights, epochs)
                jobs.append(executor.submit(_train_member, *args) if executor else args)
            for member, job in zip(state["members"], jobs, strict=True):
                try:
                    weights, history = job.result() if executor else _train_member(*job)
                except BrokenProcessPool as exc:
                    raise TuneError(
                        f"a PBT member's process died in round {state['round']}; rerun to "
                        "resume from the last finished round"
                    ) from exc
                key = f"pbt/weights/member-{member['id']}-round-{state['round']}.pt"
                store.put_bytes(key, weights)
                member["weights"] = key
                member["values"].append(_score(history, tune.metric))
                member["epochs"] += len(history)
            if state["round"] < rounds - 1:  # the last segment's ranking is the result
                exploit_and_explore(state, cfg, rng)
            state["round"] += 1
            store.put_json(STATE_KEY, state)
    finally:
        if executor is not None:
            executor.shutdown()
    return records(state, cfg)


def records(state: dict[str, Any], cfg: Config) -> list[TrialRecord]:
    interval, total = cfg.tune.pbt.interval_epochs, trial_epochs(cfg)
    return [
        TrialRecord(
            number=m["id"],
            state="complete",
            value=m["values"][-1],
            params=m["params"],
            epochs=m["epochs"],
            wall_s=None,
            baseline=m["baseline"],
            worker="pbt",
            intermediate={min((i + 1) * interval, total): v for i, v in enumerate(m["values"])},
        )
        for m in state["members"]
    ]


def load_records(store: Store, cfg: Config) -> list[TrialRecord]:
    return records(store.get_json(STATE_KEY), cfg)
