"""Choosing ONNX Runtime's graph optimization level by timing it, not by assuming.

    choice = select_optimization_level(onnx_bytes, validation_x[:64], rounds=7, noise=0.05)
    choice["chosen"], choice["median_ms"]      # e.g. "all", {"disable": 0.14, ..., "all": 0.13}

Each candidate is a real session with the server's session options. Rounds of 10 calls are
interleaved across candidates (in a rotating order) so drift on a shared machine hits all of them
alike; a candidate's time is its median round. Levels within noise of the fastest count as equal
and the highest of them wins: it is ONNX Runtime's default and its most-tested path.
"""

from __future__ import annotations

import time

import numpy as np

from trainpipe.export.config import OPTIMIZATION_LEVELS
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session

CALLS_PER_ROUND = 10
WARMUP_CALLS = 3


def time_sessions(sessions: dict, batch: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call of each session on ``batch``, one entry per round."""
    feeds = {INPUT_NAME: batch}
    names = list(sessions)
    for session in sessions.values():
        for _ in range(WARMUP_CALLS):
            session.run([OUTPUT_NAME], feeds)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            session = sessions[name]
            started = time.perf_counter()
            for _ in range(CALLS_PER_ROUND):
                session.run([OUTPUT_NAME], feeds)
            per_round[name].append((time.perf_counter() - started) * 1000 / CALLS_PER_ROUND)
    return per_round


def summarize(per_round: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(median ms, relative interquartile spread) of each candidate."""
    median = {name: float(np.median(ms)) for name, ms in per_round.items()}
    spread = {
        name: float(np.subtract(*np.percentile(ms, [75, 25])) / median[name])
        for name, ms in per_round.items()
    }
    return median, spread


def choose_within_noise(per_round: dict[str, list[float]], noise: float) -> dict:
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
        "calls_per_round": CALLS_PER_ROUND,
        "median_ms": {level: round(ms, 4) for level, ms in median.items()},
        "spread": {level: round(s, 4) for level, s in spread.items()},
    }


def select_optimization_level(
    onnx_bytes: bytes, batch: np.ndarray, *, rounds: int, noise: float
) -> dict:
    """Time a session at every level on ``batch``; returns the choice and every timing."""
    sessions = {level: ort_session(onnx_bytes, level) for level in OPTIMIZATION_LEVELS}
    choice = choose_within_noise(time_sessions(sessions, batch, rounds), noise)
    return {**choice, "batch_size": len(batch)}


def fixed_optimization_level(level: str) -> dict:
    """The record when the config names a level instead of measuring."""
    return {"chosen": level, "measured": False}
