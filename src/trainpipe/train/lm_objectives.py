"""Language-model objectives for the one Trainer: next-token (causal) and masked-token (BERT).

A batch's ``x`` holds packed token ids ``[batch, seq_len + 1]`` (see
:func:`trainpipe.data.text.pack`); labels are unused. Both return the mean cross-entropy per
predicted token and, as the validation metric, each sequence's share of correctly predicted
tokens summed over the batch (so the Trainer's per-example mean is the token accuracy). In
training mode the metric is not computed (the Trainer discards it there, and an argmax over the
vocabulary at every position is real work for a large model).
Validation perplexity is ``exp(val_loss)``: every sequence has the same number of targets.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class CausalLM:
    name = "causal_lm"
    metric_name = "token_accuracy"

    def loss(self, model, x, y, generator):
        inputs, targets = x[:, :-1], x[:, 1:]
        if model.training:  # the loss inside the (compiled) forward: see TransformerLM.forward
            return model(inputs, targets=targets), 0.0
        logits = model(inputs).float()
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        correct = (logits.argmax(-1) == targets).float().mean(1)
        return loss, correct.sum()


class MaskedLM:
    """BERT's recipe: choose ``mask_ratio`` of the non-special tokens; of those, 80% become
    the mask token, 10% a random vocabulary token, 10% stay; predict the originals at the
    chosen positions."""

    name = "masked_lm"
    metric_name = "masked_token_accuracy"

    def __init__(self, mask_ratio: float, mask_id: int, vocab_size: int, special_ids: list[int]):
        self.mask_ratio = mask_ratio
        self.mask_id = mask_id
        self.vocab_size = vocab_size
        self.special_ids = torch.tensor(sorted(special_ids), dtype=torch.int64)
        """Never chosen for prediction (padding, end of text, the mask itself)."""

    def loss(self, model, x, y, generator):
        ids = x[:, :-1]
        shape = ids.shape
        draw = torch.rand(shape, generator=generator).to(ids.device)
        action = torch.rand(shape, generator=generator).to(ids.device)
        random_ids = torch.randint(0, self.vocab_size, shape, generator=generator).to(ids.device)
        special = torch.isin(ids, self.special_ids.to(ids.device))
        chosen = (draw < self.mask_ratio) & ~special
        inputs = torch.where(chosen & (action < 0.8), self.mask_id, ids)
        inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
        targets = ids.masked_fill(~chosen, -100)
        if model.training:
            return model(inputs, targets=targets), 0.0
        logits = model(inputs).float()
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        hits = ((logits.argmax(-1) == ids) & chosen).sum(1).float()
        per_sequence = hits / chosen.sum(1).clamp_min(1)
        return loss, per_sequence.sum()
