"""A table several times larger than the memory a run may use: does ``trainpipe run`` validate
it, train an epoch and finish with a peak RSS that does not grow with the data?

    python -m benchmarks.memory                      # 10 GiB table (goal: 5x a 2 GiB limit)
    python -m benchmarks.memory --table-mib 300      # the size the test suite uses (~4 min)
    python -m benchmarks.memory --quick              # 60 MiB table, quick look

It writes a numeric table (32 float32 features, 10 classes) as Parquet shards one shard at a
time (never whole in memory), then runs ``trainpipe run`` twice with the same settings: on a
baseline table a tenth of the size (torch, kfp, the model and the bounded samples some stages
take: ``SAMPLE_ROWS`` rows per split for the baselines and the export checks) and on the
whole table, each inside a
fresh wrapper process that reports the peak RSS of the largest process of the run
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``: every stage is a subprocess, waited for). The
loader runs in the training process (``loader_workers=0``), so that peak is everything that
held data. It prints one JSON object: the table's size, both peaks, the growth and whether the
run finished within ``table / 5`` of growth (the goal "five times larger than the limit").

Why RSS and not ``prlimit --as``: an address-space limit counts reserved virtual memory
(allocator arenas, thread stacks, every DataLoader worker's own), not memory used; RSS is what
a cgroup, and so a Kubernetes memory limit, counts. ``benchmarks.memory_limit`` runs the stages
under a real cgroup limit instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = 32
ROW_BYTES = 4 * FEATURES + 8
"""float32 features plus an int64 label: what a row costs in memory once read."""
ROW_GROUP_ROWS = 8192
GOAL_FACTOR = 5
_TRAINPIPE_RUN = (sys.executable, "-m", "trainpipe", "run")

_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(json.dumps({'rc': done.returncode, 'peak_kib': peak}))\n"
)


def write_table(root: Path, rows: int, rows_per_shard: int, seed: int = 0) -> int:
    """Parquet shards of ``rows`` rows under ``root``, written one at a time; returns the bytes
    on disk. The label depends on the features, so training has something to learn."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(FEATURES, 10)).astype(np.float32)
    written = 0
    for number, start in enumerate(range(0, rows, rows_per_shard)):
        n = min(rows_per_shard, rows - start)
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        label = (x @ weights).argmax(axis=1).astype(np.int64)
        table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURES)}, "label": label})
        path = root / f"part-{number:05d}.parquet"
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
        written += path.stat().st_size
    return written


def settings(source: Path, batch_size: int, extra: dict[str, str] | None = None) -> dict:
    """The config both checks use: one epoch of each training stage, the loader in the training
    process (so a process's peak is everything that held data), one ensemble member."""
    return {
        "data.source": str(source),
        "data.label_column": "label",
        "data.streaming.loader_workers": "0",
        "pretrain.epochs": "1",
        "pretrain.batch_size": str(batch_size),
        "finetune.epochs": "1",
        "finetune.batch_size": str(batch_size),
        "finetune.label_fraction": "1.0",
        "finetune.compare_with_scratch": "false",
        "finetune.min_steps": "0",
        "finetune.ensemble_size": "1",
        # Register and deploy run whatever one epoch scored (deploy streams the test split).
        "gate.min_value": "0.0",
        "gate.max_gap_to_linear": "null",
        **(extra or {}),
    }


def run_settings(
    source: Path, output: Path, batch_size: int, extra: dict[str, str] | None = None
) -> list[str]:
    sets = settings(source, batch_size, extra)
    return ["--output", str(output), *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def measured_run(args: list[str], report: Path, log: Path) -> dict:
    """``trainpipe run ARGS`` in a fresh wrapper: exit code, wall time and the peak RSS (MiB)
    of its largest process."""
    started = time.monotonic()
    with log.open("w") as out:
        wrapper = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(report), *_TRAINPIPE_RUN, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        )
    if wrapper.returncode:
        raise RuntimeError(f"the measuring wrapper failed (exit {wrapper.returncode})")
    result = json.loads(report.read_text())
    return {
        "rc": result["rc"],
        "wall_s": round(time.monotonic() - started, 1),
        "peak_rss_mib": round(result["peak_kib"] / 1024, 1),
        "log": str(log),
    }


def measure(
    root: Path,
    table_mib: float,
    rows_per_shard: int,
    batch_size: int,
    extra: dict[str, str] | None = None,
    baseline_mib: float | None = None,
) -> dict:
    """Write the table and a baseline table (``baseline_mib``, a tenth by default) under
    ``root``, run both with the same settings (``extra``: more ``--set`` values), compare their
    peaks. The baseline should hold ``SAMPLE_ROWS`` rows in every split, so that what grows is
    only what depends on the data's size."""
    rows = int(table_mib * 2**20 // ROW_BYTES)
    baseline_rows = int((baseline_mib or table_mib / 10) * 2**20 // ROW_BYTES)
    disk = write_table(root / "table", rows, rows_per_shard)
    baseline_disk = write_table(root / "baseline", baseline_rows, rows_per_shard, seed=1)
    baseline = measured_run(
        run_settings(root / "baseline", root / "runs-baseline", batch_size, extra),
        root / "baseline.json",
        root / "baseline.log",
    )
    full = measured_run(
        run_settings(root / "table", root / "runs-table", batch_size, extra),
        root / "table.json",
        root / "table.log",
    )
    table_bytes = rows * ROW_BYTES
    growth = full["peak_rss_mib"] - baseline["peak_rss_mib"]
    allowed = table_bytes / 2**20 / GOAL_FACTOR
    return {
        "rows": rows,
        "features": FEATURES,
        "shards": -(-rows // rows_per_shard),
        "table_mib_in_memory": round(table_bytes / 2**20, 1),
        "table_mib_on_disk": round(disk / 2**20, 1),
        "baseline_rows": baseline_rows,
        "baseline_mib_on_disk": round(baseline_disk / 2**20, 1),
        "baseline": baseline,
        "table": full,
        "peak_rss_growth_mib": round(growth, 1),
        "allowed_growth_mib": round(allowed, 1),
        "goal_met": full["rc"] == 0 and baseline["rc"] == 0 and growth < allowed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-mib", type=float, default=10 * 1024)
    parser.add_argument("--rows-per-shard", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--baseline-mib", type=float, help="default: a tenth of the table")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more config for both runs, e.g. gate.bootstrap_resamples=100",
    )
    parser.add_argument("--quick", action="store_true", help="a 60 MiB table")
    parser.add_argument("--dir", help="keep the table and runs here (default: a temp folder)")
    args = parser.parse_args()
    table_mib = 60.0 if args.quick else args.table_mib
    extra = dict(item.split("=", 1) for item in args.set)
    rows_per_shard = 20_000 if args.quick else args.rows_per_shard
    if args.dir:
        result = measure(
            Path(args.dir), table_mib, rows_per_shard, args.batch_size, extra, args.baseline_mib
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(
                Path(tmp), table_mib, rows_per_shard, args.batch_size, extra, args.baseline_mib
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
