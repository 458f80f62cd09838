"""Paired, alternating timing of trainpipe's Trainer against a bare PyTorch loop.

    start = clocks(); ...work...; seconds = elapsed(start)
    times = alternate(rounds, bare=run_bare, trainer=run_trainer)   # each returns elapsed(...)
    result |= summary(times, work=tokens_per_round, goal=0.95, clock="cpu")

Each round runs both sides back to back, in ABBA order (bare first in even rounds, the Trainer
first in odd ones), so neither side always meets a warmer or busier machine. A shared machine
drifts between rounds far more than within one, so the headline ``ratio`` is the median of the
per-round ratios (each side measured next to the other), not the ratio of two medians taken at
different moments; both are reported with each side's min/median/max.

Two clocks time every run: wall time, and this process's CPU time. On a CPU device the
headline uses CPU time: with one intra-op thread it is the work the process did, which other
jobs on a shared machine inflate far less than wall time (they take the core away, and wall
time counts that, CPU time does not). On a GPU the headline is wall time (the host waits on
the device there). The other clock's ratio is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

CLOCKS = ("wall", "cpu")


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = clocks()
    return {"wall": wall - start[0], "cpu": cpu - start[1]}


def alternate(
    rounds: int,
    *,
    bare: Callable[[], dict[str, float]],
    trainer: Callable[[], dict[str, float]],
) -> dict[str, list]:
    """Run ``rounds`` pairs in ABBA order; each callable returns its :func:`elapsed`."""
    times: dict[str, list] = {"bare": [], "trainer": [], "order": []}
    sides = {"bare": bare, "trainer": trainer}
    for index in range(rounds):
        order = ("bare", "trainer") if index % 2 == 0 else ("trainer", "bare")
        for side in order:
            times[side].append(sides[side]())
        times["order"].append("-".join(order))
    return times


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(float(np.median(values)), 1),
        "max": round(max(values), 1),
    }


def _ratios(times: dict[str, list], work: float, clock: str) -> tuple[list, list, list]:
    bare = [work / t[clock] for t in times["bare"]]
    ours = [work / t[clock] for t in times["trainer"]]
    return bare, ours, [o / b for o, b in zip(ours, bare, strict=True)]


def summary(times: dict[str, list], *, work: float, goal: float, clock: str) -> dict:
    """Rates (``work`` per second) of each side by ``clock`` (min/median/max), the per-round
    ratios, their median (``ratio``), the ratio of the medians, the other clock's ratio, and
    whether ``ratio`` meets ``goal``."""
    bare, ours, round_ratios = _ratios(times, work, clock)
    ratio = float(np.median(round_ratios))
    other = next(c for c in CLOCKS if c != clock)
    other_bare, other_ours, other_ratios = _ratios(times, work, other)
    return {
        "clock": clock,
        "bare": _spread(bare),
        "trainer": _spread(ours),
        "round_ratios": [round(r, 3) for r in round_ratios],
        "ratio": round(ratio, 3),
        "ratio_of_medians": round(float(np.median(ours) / np.median(bare)), 3),
        f"{other}_clock": {
            "bare": _spread(other_bare),
            "trainer": _spread(other_ours),
            "round_ratios": [round(r, 3) for r in other_ratios],
            "ratio": round(float(np.median(other_ratios)), 3),
        },
        "order": times["order"],
        "goal_ratio": goal,
        "goal_met": ratio >= goal,
    }
