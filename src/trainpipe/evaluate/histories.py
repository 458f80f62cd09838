"""The learning curves a report shows: the stored training histories of a fine-tuned model."""

from __future__ import annotations

from collections.abc import Callable

from trainpipe.artifacts import ArtifactSet


def load_histories(
    finetuned: ArtifactSet, open_set: Callable[[str], ArtifactSet]
) -> dict[str, dict]:
    """Fine-tuning's history and, when pretraining ran, pretraining's (found by lineage and
    opened with ``open_set``)."""
    histories = {"fine-tuning": finetuned.get_json("history.json")}
    pretrain_uri = finetuned.manifest["lineage"]["inputs"].get("pretrain")
    if pretrain_uri:
        pretrained = open_set(pretrain_uri)
        if "history.json" in pretrained.names():
            histories["pretraining"] = pretrained.get_json("history.json")
    return histories
