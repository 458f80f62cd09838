"""Reading the validated splits that the validate_data stage stored."""

from __future__ import annotations

from trainpipe.artifacts import ArtifactSet
from trainpipe.data.datasets import Dataset, split_from_npz


def load_validated(data: ArtifactSet) -> Dataset:
    info = data.get_json("dataset.json")
    train, validation, test = (
        split_from_npz(data.get_bytes(f"{name}.npz")) for name in ("train", "validation", "test")
    )
    return Dataset(
        train,
        validation,
        test,
        label_names=info["label_names"],
        feature_shape=info["feature_shape"],
        source=info["source"],
        feature_names=info.get("feature_names", []),
    )
