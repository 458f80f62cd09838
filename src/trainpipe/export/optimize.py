"""Choosing ONNX Runtime's graph optimization level by timing it, not by assuming.

    choice = select_optimization_level(onnx_bytes, validation_x[:64], rounds=7, noise=0.05)
    choice["chosen"], choice["median_ms"]      # e.g. "all", {"disable": 0.14, ..., "all": 0.13}

Each candidate is a real session with the server's session options. Rounds are interleaved
across candidates (in a rotating order) so drift on a shared machine hits all of them alike, and
each round makes enough calls to last about ``ROUND_MS`` so one preemption by the scheduler does
not decide it; a candidate's time is its median round. Levels within noise of the fastest count
as equal and the highest of them wins: it is ONNX Runtime's default and its most-tested path.
"""

from __future__ import annotations

import time

import numpy as np

from trainpipe.export.config import OPTIMIZATION_LEVELS
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session

ROUND_MS = 20.0
MIN_CALLS_PER_ROUND = 3
MAX_CALLS_PER_ROUND = 1000
WARMUP_CALLS = 3


def calls_per_round(warmup_ms: float) -> int:
    """Calls that make a round last about ROUND_MS, given one warm call's time."""
    calls = int(np.ceil(ROUND_MS / max(warmup_ms, 1e-3)))
    return min(max(calls, MIN_CALLS_PER_ROUND), MAX_CALLS_PER_ROUND)


def time_sessions(
    sessions: dict, batch: np.ndarray, rounds: int
) -> tuple[dict[str, list[float]], int]:
    """Milliseconds per call of each session on ``batch`` (one entry per round), and the calls
    each round made."""
    feeds = {INPUT_NAME: batch}
    names = list(sessions)
    fastest_call_ms = float("inf")
    for session in sessions.values():
        session.run([OUTPUT_NAME], feeds)  # first call allocates; not representative
        started = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            session.run([OUTPUT_NAME], feeds)
        fastest_call_ms = min(
            fastest_call_ms, (time.perf_counter() - started) * 1000 / WARMUP_CALLS
        )
    calls = calls_per_round(fastest_call_ms)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            session = sessions[name]
            started = time.perf_counter()
            for _ in range(calls):
                session.run([OUTPUT_NAME], feeds)
            per_round[name].append((time.perf_counter() - started) * 1000 / calls)
    return per_round, calls


def summarize(per_round: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(median ms, relative interquartile spread) of each candidate."""
    median = {name: float(np.median(ms)) for name, ms in per_round.items()}
    spread = {
        name: float(np.subtract(*np.percentile(ms, [75, 25])) / median[name])
        for name, ms in per_round.items()
    }
    return median, spread


def choose_within_noise(per_round: dict[str, list[float]], *, calls: int, noise: float) -> dict:
    """The highest level (``per_round`` lists levels lowest first) within noise of the fastest.

    Noise is ``noise`` or the fastest level's relative interquartile spread, whichever is larger.
    """
    median, spread = summarize(per_round)
    fastest = min(median, key=median.__getitem__)
    tolerance = max(noise, spread[fastest])
    tied = [level for level in per_round if median[level] <= median[fastest] * (1 + tolerance)]
    return {
        "chosen": tied[-1],
        "measured": True,
        "fastest": fastest,
        "tied_within_noise": tied,
        "tolerance": round(tolerance, 4),
        "rounds": len(next(iter(per_round.values()))),
        "calls_per_round": calls,
        "median_ms": {level: round(ms, 4) for level, ms in median.items()},
        "spread": {level: round(s, 4) for level, s in spread.items()},
    }


def select_optimization_level(
    onnx_bytes: bytes, batch: np.ndarray, *, rounds: int, noise: float
) -> dict:
    """Time a session at every level on ``batch``; returns the choice and every timing."""
    sessions = {level: ort_session(onnx_bytes, level) for level in OPTIMIZATION_LEVELS}
    per_round, calls = time_sessions(sessions, batch, rounds)
    choice = choose_within_noise(per_round, calls=calls, noise=noise)
    return {**choice, "batch_size": len(batch)}


def fixed_optimization_level(level: str) -> dict:
    """The record when the config names a level instead of measuring."""
    return {"chosen": level, "measured": False}
