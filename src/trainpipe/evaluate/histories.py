"""What a report shows about training: the stored histories of a fine-tuned model and, when
pretraining ran, whether it learned and whether it helped."""

from __future__ import annotations

from collections.abc import Callable

from trainpipe.artifacts import ArtifactSet

PAYOFF_KEYS = (
    "labelled_examples",
    "score",
    "initialization",
    "pretrained_val_score",
    "scratch_val_score",
    "pretrained_test_score",
    "scratch_test_score",
)


def _pretrain_json(
    finetuned: ArtifactSet, open_set: Callable[[str], ArtifactSet], name: str
) -> dict | None:
    """``name`` from the pretrain stage ``finetuned`` started from (found by lineage)."""
    pretrain_uri = finetuned.manifest["lineage"]["inputs"].get("pretrain")
    if not pretrain_uri:
        return None
    pretrained = open_set(pretrain_uri)
    return pretrained.get_json(name) if name in pretrained.names() else None


def load_histories(
    finetuned: ArtifactSet, open_set: Callable[[str], ArtifactSet]
) -> dict[str, dict]:
    """Fine-tuning's history and, when pretraining ran, pretraining's (found by lineage and
    opened with ``open_set``)."""
    histories = {"fine-tuning": finetuned.get_json("history.json")}
    pretraining = _pretrain_json(finetuned, open_set, "history.json")
    if pretraining is not None:
        histories["pretraining"] = pretraining
    return histories


def load_pretraining(finetuned: ArtifactSet, open_set: Callable[[str], ArtifactSet]) -> dict:
    """Pretraining's curve diagnosis and fine-tuning's pretrained-vs-scratch comparison (the
    ``pretraining`` argument of :func:`trainpipe.evaluate.report.evaluation_html`)."""
    found = {k: v for k, v in finetuned.summary.items() if k in PAYOFF_KEYS}
    diagnosis = _pretrain_json(finetuned, open_set, "diagnosis.json")
    if diagnosis is not None:
        found["diagnosis"] = diagnosis
    return found
