"""Fitted gradient-boosted trees as a torch module: packed node arrays, traversed with gathers.

    trees = TreeEnsemble(**packed)   # packed by trainpipe.train.trees.pack_trees
    logits = trees(x)                # [n, outputs]: class logits, or one value (regression)

Every tree's nodes live in flat buffers (all trees one after the other); a row starts at each
tree's root and takes ``steps`` (the deepest tree's depth) steps: at a split node it goes left
when its feature is at most the threshold, or, for a missing (NaN) value, where the split sent
missing values in training; a leaf points to itself (its left and right child are its own
index), so the fixed number of steps needs no per-row branching. The leaf values of the trees
of each output are summed onto the baseline (``output``: which output a tree adds to).

Only tensors, no pickled estimator: the module is saved in model.pt's state dicts, loaded with
``torch.load(weights_only=True)`` and exported to ONNX (Gather, GatherElements, IsNaN, Where).
"""

from __future__ import annotations

import torch
from torch import nn

PACKED_KEYS = (
    "feature",
    "threshold",
    "left",
    "right",
    "missing_left",
    "value",
    "roots",
    "output",
    "baseline",
    "steps",
)


class TreeEnsemble(nn.Module):
    def __init__(
        self,
        feature: torch.Tensor,
        threshold: torch.Tensor,
        left: torch.Tensor,
        right: torch.Tensor,
        missing_left: torch.Tensor,
        value: torch.Tensor,
        roots: torch.Tensor,
        output: torch.Tensor,
        baseline: torch.Tensor,
        steps: torch.Tensor,
    ):
        """Nodes (flat over all trees): ``feature`` (int64), ``threshold`` (float32, go left
        when ``x <= threshold``), ``left``/``right`` (int64 flat indices; a leaf's are its own),
        ``missing_left`` (bool), ``value`` (float32, a leaf's contribution). Trees: ``roots``
        (int64 flat index) and ``output`` ([trees, outputs] one-hot float32). ``baseline``
        ([outputs]) and ``steps`` (the deepest tree's depth, a 0-d int64)."""
        super().__init__()
        for name, tensor in zip(
            PACKED_KEYS,
            (feature, threshold, left, right, missing_left, value, roots, output, baseline, steps),
            strict=True,
        ):
            self.register_buffer(name, tensor.clone())
        self.depth = int(steps)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TreeEnsemble:
        return cls(**{key: state[key] for key in PACKED_KEYS})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        node = self.roots.unsqueeze(0).expand(x.shape[0], -1)  # [n, trees]
        for _ in range(self.depth):
            value = torch.gather(x, 1, self.feature[node])
            # NaN <= t is false; logical ops, not Where: ONNX Runtime has no boolean Where.
            go_left = (value <= self.threshold[node]) | (
                torch.isnan(value) & self.missing_left[node]
            )
            node = torch.where(go_left, self.left[node], self.right[node])
        return self.value[node] @ self.output + self.baseline
