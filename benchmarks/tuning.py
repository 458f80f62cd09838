"""Hyperparameter search: untuned defaults against the tuned config, and ASHA against no
pruning at the same trial count, on a generated table, scikit-learn's breast-cancer table and
the digits images.

    OMP_NUM_THREADS=1 python -m benchmarks.tuning [--quick]

Per dataset: the default config and the best config of a TPE+ASHA search, each trained the
same way, with validation and test accuracy; then random search (same seed, so both draw the
same configurations) without pruning and with ASHA: epochs trained, wall time, best validation
accuracy. Trials run in one process so wall times compare. Prints one JSON object on its last
line; goals: tuned >= default everywhere, ASHA <= half the epochs of the unpruned search with
a best trial within 0.005 of it.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, make_classification

from trainpipe.config import Config, load_config
from trainpipe.data.config import DataConfig
from trainpipe.data.datasets import Dataset, Split, load_dataset, split_indices
from trainpipe.evaluate.predict import predict_logits
from trainpipe.storage import open_store
from trainpipe.tune.result import summarize
from trainpipe.tune.space import apply_params
from trainpipe.tune.study import load_trials, run_search
from trainpipe.tune.trial import FinetuneTrial

SPACE = (
    "tune.space={"
    "finetune.lr: {type: log_uniform, low: 3.0e-4, high: 3.0e-2}, "
    "finetune.weight_decay: {type: log_uniform, low: 1.0e-5, high: 0.1}, "
    "finetune.batch_size: {type: categorical, choices: [null, 32, 64, 128]}, "
    "model.dropout: {type: uniform, low: 0.0, high: 0.5}}"
)


def table_dataset(x: np.ndarray, y: np.ndarray, name: str) -> Dataset:
    """Stratified splits as the pipeline makes them; features standardized on the train split."""
    y = y.astype(np.int64)
    parts = split_indices(DataConfig(), y, int(y.max()) + 1)
    train, val, test = (parts[k] for k in ("train", "validation", "test"))
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    labels = [str(i) for i in range(int(y.max()) + 1)]
    return Dataset(
        Split(x[train], y[train]),
        Split(x[val], y[val]),
        Split(x[test], y[test]),
        labels,
        [x.shape[1]],
        name,
    )


def datasets() -> dict[str, Dataset]:
    x, y = make_classification(
        n_samples=3000,
        n_features=20,
        n_informative=8,
        n_classes=3,
        class_sep=0.8,
        flip_y=0.02,
        random_state=0,
    )
    cancer = load_breast_cancer()
    return {
        "generated": table_dataset(x, y, "generated"),
        "breast_cancer": table_dataset(cancer.data, cancer.target, "breast_cancer"),
        "digits": load_dataset(DataConfig()),
    }


def base_config(epochs: int, trials: int, *overrides: str) -> Config:
    return load_config(
        None,
        [
            "pretrain.enabled=false",
            "finetune.label_fraction=1.0",
            f"finetune.epochs={epochs}",
            "finetune.compare_with_scratch=false",
            "tune.enabled=true",
            SPACE,
            f"tune.trials={trials}",
            f"tune.epochs={epochs}",
            f"tune.min_epochs={max(1, epochs // 6)}",
            *overrides,
        ],
    )


def search(dataset: Dataset, cfg: Config) -> dict:
    trial = FinetuneTrial(dataset, None, cfg.tune.epochs)
    with tempfile.TemporaryDirectory() as root:
        store = open_store(root)
        started = time.perf_counter()
        run_search(store, cfg, trial, processes=1)
        wall_s = time.perf_counter() - started
        best = summarize(load_trials(store, cfg), cfg)
    return best | {"wall_s": round(wall_s, 1)}


def scores(dataset: Dataset, cfg: Config) -> dict:
    """Train the config as the finetune stage would; validation and test accuracy."""
    model, history = FinetuneTrial(dataset, None, cfg.finetune.epochs).fit(
        cfg, cfg.finetune.epochs, None
    )
    logits = predict_logits(model.eval(), dataset.test.x)
    test = float((logits.argmax(1) == dataset.test.y).mean())
    return {"val_accuracy": round(history[-1].val_metric, 4), "test_accuracy": round(test, 4)}


def run(quick: bool) -> dict:
    epochs, trials = (6, 8) if quick else (12, 24)
    results = {}
    for name, dataset in datasets().items():
        print(f"[bench] {name}: {len(dataset.train)} train examples", flush=True)
        tuned_search = search(dataset, base_config(epochs, trials))
        default_cfg = base_config(epochs, trials)
        default = scores(dataset, default_cfg)
        tuned = scores(dataset, apply_params(default_cfg, tuned_search["params"]))
        random = ["tune.sampler=random", "tune.include_default=false"]
        unpruned = search(dataset, base_config(epochs, trials, *random, "tune.pruner=none"))
        asha = search(dataset, base_config(epochs, trials, *random, "tune.pruner=asha"))
        results[name] = {
            "default": default,
            "tuned": tuned,
            "tuned_params": tuned_search["params"],
            "search_best_val": round(tuned_search["value"], 4),
            "search_gain_val": round(tuned_search["gain"], 4),
            "unpruned": {
                "epochs": unpruned["epochs_run"],
                "wall_s": unpruned["wall_s"],
                "best_val": round(unpruned["value"], 4),
            },
            "asha": {
                "epochs": asha["epochs_run"],
                "wall_s": asha["wall_s"],
                "best_val": round(asha["value"], 4),
                "pruned": asha["pruned"],
            },
        }
        print(f"[bench] {name}: {json.dumps(results[name])}", flush=True)
    goals = {
        "tuned_ge_default_val": all(
            r["tuned"]["val_accuracy"] >= r["default"]["val_accuracy"] for r in results.values()
        ),
        "tuned_ge_default_test": all(
            r["tuned"]["test_accuracy"] >= r["default"]["test_accuracy"] for r in results.values()
        ),
        "asha_half_epochs": all(
            r["asha"]["epochs"] <= r["unpruned"]["epochs"] / 2 for r in results.values()
        ),
        "asha_best_within_0.005": all(
            r["asha"]["best_val"] >= r["unpruned"]["best_val"] - 0.005 for r in results.values()
        ),
    }
    return {
        "benchmark": "tuning",
        "quick": quick,
        "epochs_per_trial": epochs,
        "trials": trials,
        "machine": platform.machine(),
        "datasets": results,
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and epochs")
    args = parser.parse_args()
    print(json.dumps(run(args.quick)))


if __name__ == "__main__":
    main()
