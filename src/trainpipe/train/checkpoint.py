"""Resumable training state in the artifact store.

    checkpoints/<run_id>/<stage>/step-<N>/state.pt   + manifest.json (written last)

A checkpoint holds the model, optimizer, loss scaler, step, data position, history so far and
every RNG state (python, numpy, torch, CUDA). Only folders with a manifest count, so a
checkpoint half-written when the pod was killed is never chosen; the newest ``keep`` complete
ones are kept.
"""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.models.checkpoint import from_bytes, to_bytes
from trainpipe.storage import Store

STATE_NAME = "state.pt"
_STEP_DIR = re.compile(r"step-(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    # As plain values and a tensor: weights_only loading refuses pickled numpy arrays.
    name, keys, position, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]


def _as_python_state(state):
    # weights_only loading returns lists where random.getstate() had tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class CheckpointStore:
    def __init__(self, store: Store, run_id: str, stage: str, *, keep: int):
        self.store = store
        self.prefix = f"checkpoints/{run_id}/{stage}"
        self.run_id = run_id
        self.stage = stage
        self.keep = keep

    def complete_steps(self) -> list[int]:
        steps = set()
        for key in self.store.list(self.prefix):
            parts = key[len(self.prefix) + 1 :].split("/")
            match = _STEP_DIR.match(parts[0]) if len(parts) == 2 else None
            if match and parts[1] == "manifest.json":
                steps.add(int(match.group(1)))
        return sorted(steps)

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Commit the state of ``step``; a step already committed is kept as it is (the state at
        a given step is the same however often it is saved)."""
        folder = f"{self.prefix}/step-{step}"
        if step in self.complete_steps():
            return self.store.uri_for(folder)
        writer = ArtifactWriter(self.store, folder, stage=self.stage, run_id=self.run_id)
        writer.put_bytes(STATE_NAME, to_bytes(state))
        uri = writer.commit(summary={"step": step})
        self._prune()
        return uri

    def latest(self) -> dict[str, Any] | None:
        steps = self.complete_steps()
        if not steps:
            return None
        folder = f"{self.prefix}/step-{steps[-1]}"
        return from_bytes(ArtifactSet.open_in(self.store, folder).get_bytes(STATE_NAME))

    def _prune(self) -> None:
        for step in self.complete_steps()[: -self.keep]:
            for key in self.store.list(f"{self.prefix}/step-{step}"):
                # The manifest goes first so a half-pruned folder is already invisible.
                if key.endswith("manifest.json"):
                    self.store.delete(key)
            for key in self.store.list(f"{self.prefix}/step-{step}"):
                self.store.delete(key)
