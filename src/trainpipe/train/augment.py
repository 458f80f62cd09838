"""Input augmentation for training: small random shifts and noise.

Images (``[n, c, h, w]``) are shifted by up to ``max_shift`` pixels (zero fill) and get a little
Gaussian noise; flat feature vectors only get noise and random feature dropout. All randomness
comes from the given generator so runs are reproducible.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def augment(
    x: torch.Tensor, generator: torch.Generator, *, max_shift: int = 1, noise_std: float = 0.05
) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * noise_std
    if x.ndim != 4:
        keep = (torch.rand(x.shape, generator=generator) > 0.1).to(x.device, x.dtype)
        return x * keep + noise
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    rows = torch.arange(h).unsqueeze(0) + shifts[:, :1]  # [n, h]
    cols = torch.arange(w).unsqueeze(0) + shifts[:, 1:]  # [n, w]
    batch = torch.arange(n)[:, None, None]
    rows, cols = rows.to(x.device), cols.to(x.device)
    shifted = padded.permute(0, 2, 3, 1)[batch.to(x.device), rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2) + noise
