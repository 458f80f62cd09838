"""validate_data: read the configured data, check it, split it, store the splits."""

from __future__ import annotations

import numpy as np

from trainpipe.data.datasets import dataset_to_npz, load_dataset
from trainpipe.errors import DataError
from trainpipe.stages.context import make_context
from trainpipe.stages.entry import stage_entry


def basic_checks(dataset) -> list[str]:
    """Blocking problems that make training meaningless."""
    problems = []
    if dataset.num_classes < 2:
        problems.append(f"label: only {dataset.num_classes} class present; need at least 2")
    for name, split in dataset.splits().items():
        if len(split) == 0:
            problems.append(f"{name}: split is empty")
        missing = set(range(dataset.num_classes)) - set(np.unique(split.y).tolist())
        if name == "train" and missing:
            names = [dataset.label_names[i] for i in sorted(missing)]
            problems.append(f"label: classes {names} never appear in the training split")
    return problems


@stage_entry
def run_validate(config_json: str, run_id: str, job_id: str = "") -> tuple[str, str]:
    """Returns (run id, data URI). The run id is the one given, else the KFP job's id, so a
    scheduled run on a cluster gets a fresh folder without anyone choosing a name."""
    run_id = run_id or job_id
    if not run_id:
        raise DataError("validate_data needs a run_id or the KFP job id; pass run_id")
    ctx = make_context(config_json, run_id)
    dataset = load_dataset(ctx.cfg.data, endpoint_url=ctx.cfg.storage.endpoint_url)
    problems = basic_checks(dataset)
    if problems:
        raise DataError(f"data error: {dataset.source}: " + "; ".join(problems))
    writer = ctx.writer("validate_data", inputs={"data": dataset.source})
    for name, blob in dataset_to_npz(dataset).items():
        writer.put_bytes(name, blob)
    info = {
        "source": dataset.source,
        "label_names": dataset.label_names,
        "feature_shape": dataset.feature_shape,
        "feature_names": dataset.feature_names,
        "split_sizes": {name: len(split) for name, split in dataset.splits().items()},
        "class_counts_train": np.bincount(dataset.train.y, minlength=dataset.num_classes).tolist(),
    }
    writer.put_json("dataset.json", info)
    uri = writer.commit(
        summary={"examples": sum(info["split_sizes"].values()), **info["split_sizes"]}
    )
    return run_id, uri
