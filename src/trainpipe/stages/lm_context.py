"""What the language-model DAG's steps share: the stored labelled text and tokenizers.

The ``lm_data`` step stores the labelled corpus's fixed splits (``labelled_text.json``: texts,
labels, label names) and, when it trained or loaded one, ``tokenizer.json``; fine-tuning,
evaluation and deploy read them from there, so every step scores the same documents.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.errors import DataError

LABELLED_TEXT = "labelled_text.json"
TOKENIZER = "tokenizer.json"
TEST_IDS = "test_ids.npy"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class LabelledText:
    label_names: list[str]
    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    """Integer labels per split (indices into ``label_names``)."""

    def to_json(self) -> dict:
        return {
            "label_names": self.label_names,
            "splits": {
                s: {"texts": self.texts[s], "labels": self.labels[s].tolist()} for s in SPLITS
            },
        }


def labelled_text(data: ArtifactSet) -> LabelledText:
    stored = data.get_json(LABELLED_TEXT)
    splits = stored["splits"]
    return LabelledText(
        stored["label_names"],
        {s: splits[s]["texts"] for s in SPLITS},
        {s: np.asarray(splits[s]["labels"], dtype=np.int64) for s in SPLITS},
    )


def tokenizer_in(artifacts: ArtifactSet):
    """The ``tokenizer.json`` of an artifact set (checked against its manifest) as a
    ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(artifacts.get_bytes(TOKENIZER).decode("utf-8"))


def array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{where} is not a numpy array file ({exc}); rerun the step") from exc
