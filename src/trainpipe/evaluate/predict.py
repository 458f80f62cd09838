"""A trained torch classifier's logits for many examples, in batches, without autograd."""

from __future__ import annotations

import numpy as np
import torch


def predict_logits(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [
                model(torch.as_tensor(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
        )
