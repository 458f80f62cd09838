"""What the language-model DAG's steps share: the stored labelled text and tokenizers.

The ``lm_data`` step stores the labelled corpus's fixed splits (``labelled_text.json``: texts,
labels, label names) and, when it trained or loaded one, ``tokenizer.json`` and the pretraining
corpus tokenized and packed (``packed_<split>.npy``); pretraining, fine-tuning, evaluation and
deploy read them from there, so every step works on the same documents and the corpus is
tokenized once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.data.datasets import Split
from trainpipe.data.text import tokenizer_from_json
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
    """The trainpipe tokenizer (with ``<pad>`` and ``<eos>``) of an artifact set's
    ``tokenizer.json``, checked against its manifest."""
    raw = artifacts.get_bytes(TOKENIZER).decode("utf-8")
    return tokenizer_from_json(raw, origin=f"{artifacts.uri}/{TOKENIZER}")


def packed_name(split: str) -> str:
    """The ``lm_data`` file holding a split of the packed pretraining corpus."""
    return f"packed_{split}.npy"


def put_packed(writer, splits: dict[str, Split]) -> None:
    """Store the packed windows of every split as int32 (token ids fit; half of int64's size)."""
    for split in SPLITS:
        writer.put_bytes(packed_name(split), array_bytes(splits[split].x.astype(np.int32)))


def packed_splits(data: ArtifactSet) -> dict[str, Split]:
    """The packed pretraining corpus ``lm_data`` stored (each file checked against the
    manifest's checksum), as the int64 windows training takes."""
    splits = {}
    for split in SPLITS:
        name = packed_name(split)
        x = array_from(data.get_bytes(name), f"{data.uri}/{name}").astype(np.int64)
        if x.ndim != 2 or len(x) == 0:
            raise DataError(
                f"{data.uri}/{name} holds an array of shape {x.shape}, not packed sequences; "
                "rerun lm_data"
            )
        splits[split] = Split(x, np.zeros(len(x), dtype=np.int64))
    return splits


def array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{where} is not a numpy array file ({exc}); rerun the step") from exc
