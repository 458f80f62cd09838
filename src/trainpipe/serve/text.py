"""Text in, label out: tokenization in the server for text-classifier model packages.

A text package holds, besides ``model.onnx`` (graph input ``input``: int64 token ids
``[batch, seq]``, output ``logits``), the ``tokenizer.json`` it was trained with, and its
``model.json`` has a ``text`` section (:class:`TextSpec`). The server then serves a different
signature than the graph's: input ``text`` (BYTES, ``[N]``), outputs ``label`` (BYTES, ``[N]``),
``probabilities`` (FP32, ``[N, classes]``) and ``logits``. Each batch the dynamic batcher forms
is tokenized at once and padded to its longest sequence (truncated at ``max_seq_len``), so a
batch of short texts costs what short texts cost.

BYTES tensors are decoded by ``serve/protocol.py`` (JSON strings, or tritonclient's
length-prefixed binary form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainpipe.serve.errors import ModelLoadError

TOKENIZER_FILE = "tokenizer.json"
GRAPH_INPUT = "input"
GRAPH_OUTPUT = "logits"
TEXT_INPUT = "text"
TEXT_OUTPUTS = ("label", "probabilities", "logits")


@dataclass(frozen=True)
class TextSpec:
    """``model.json``'s ``text`` section."""

    pad_id: int
    max_seq_len: int
    cls_id: int | None = None
    tokenizer: str = TOKENIZER_FILE

    @classmethod
    def from_json(cls, obj: Any, where: str) -> TextSpec:
        try:
            return cls(
                pad_id=int(obj["pad_id"]),
                max_seq_len=int(obj["max_seq_len"]),
                cls_id=None if obj.get("cls_id") is None else int(obj["cls_id"]),
                tokenizer=str(obj.get("tokenizer", TOKENIZER_FILE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"{where}: the text section lacks or mangles {exc}; it needs pad_id and "
                "max_seq_len (re-run the export)"
            ) from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "pad_id": self.pad_id,
            "max_seq_len": self.max_seq_len,
            "cls_id": self.cls_id,
            "tokenizer": self.tokenizer,
        }


class TextFrontend:
    """Tokenizes a batch of texts for the graph and turns its logits into the served outputs."""

    def __init__(self, spec: TextSpec, tokenizer_json: bytes, labels: tuple[str, ...], uri: str):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        except Exception as exc:  # the Rust error type is not importable by name
            raise ModelLoadError(
                f"{uri}/{spec.tokenizer} is not a Hugging Face tokenizer.json ({exc}); re-run "
                "the export"
            ) from exc
        if not labels:
            raise ModelLoadError(f"{uri}/model.json has no labels; a text classifier needs them")
        self.spec = spec
        self.labels = np.array(labels, dtype=object)

    def encode(self, texts: np.ndarray) -> np.ndarray:
        """``[N]`` texts (str or bytes) -> ``[N, longest]`` int64 ids, padded with pad_id."""
        strings = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
        encoded = self.tokenizer.encode_batch(strings)
        prefix = [] if self.spec.cls_id is None else [self.spec.cls_id]
        rows = [(prefix + e.ids)[: self.spec.max_seq_len] for e in encoded]
        # At least 2 positions: the export traced the sequence axis from 2 up.
        width = max(2, max((len(r) for r in rows), default=2))
        ids = np.full((len(rows), width), self.spec.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids

    def outputs(self, logits: np.ndarray) -> list[np.ndarray]:
        """label, probabilities, logits (the order of :data:`TEXT_OUTPUTS`)."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return [self.labels[logits.argmax(axis=1)], probabilities, logits]
