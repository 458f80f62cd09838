"""A table several times larger than a hard memory limit: the limit put on the processes by a
cgroup (what a Kubernetes memory limit is), the table validated and one epoch of pretraining
and of fine-tuning trained through the real stage functions under it.

    python -m benchmarks.memory_limit --table-gib 5 --limit-gib 1     # the goal: table >= 5x limit
    python -m benchmarks.memory_limit --quick                         # 200 MiB table, 1 GiB limit

It writes a numeric table (``benchmarks.memory.write_table``: 32 float32 features, 10 classes)
as Parquet shards, one shard at a time, outside the limit. Then each stage (``run_validate``,
``run_pretrain``, ``run_finetune``, the functions the pipeline's components call) runs in a
fresh process that joins a new memory cgroup with ``--limit-gib`` as its limit before it
starts: the stage and every process it starts count towards it, page cache included (the
kernel reclaims that before it kills). A stage that goes over is killed by the kernel's OOM
killer, which the result records. First a process that only imports the stages measures the
baseline (torch, pyarrow, trainpipe) that no limit can go below.

It prints one JSON object: the table (rows, bytes in memory and on disk, the ratio to the
limit), the baseline, and per stage the exit code, wall time, rows/s, the stage process's peak
RSS and its largest child's, the cgroup's peak usage (RSS plus page cache) and whether the
OOM killer struck; ``passed`` when every stage finished under the limit with a peak RSS below it
(stricter than the cgroup's count, which leaves out library pages another group already has in
the page cache), the table is at least
``GOAL_FACTOR`` times the limit and fine-tuning trained a whole epoch.

Needs a writable memory cgroup (cgroup v1 ``memory`` controller or cgroup v2 with ``memory``
enabled for the current group's children), as root or with the group delegated; without one
it stops with one line saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.memory import GOAL_FACTOR, ROW_BYTES, settings, write_table

STAGES = ("validate", "pretrain", "finetune")


class MemoryCgroup:
    """A fresh child of this process's memory cgroup with a hard limit (v1 or v2)."""

    def __init__(self, limit_bytes: int, name: str) -> None:
        v1, v2 = None, None
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                v1 = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            elif number == "0" and not controllers:
                v2 = Path("/sys/fs/cgroup") / path.lstrip("/")
        if v1 is not None:
            self.root, self.version = v1, 1
        elif v2 is not None and "memory" in _read(v2 / "cgroup.subtree_control").split():
            self.root, self.version = v2, 2
        else:
            raise SystemExit(
                "memory_limit: no memory cgroup this process may create children in; run as "
                "root or in a delegated cgroup (e.g. systemd-run --user --scope -p Delegate=yes)"
            )
        self.path = self.root / name
        try:
            self.path.mkdir()
            limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (self.path / limit_file).write_text(str(limit_bytes))
            if self.version == 1:
                # No swap here would otherwise let a v1 group page out instead of failing.
                _write_if_exists(self.path / "memory.memsw.limit_in_bytes", str(limit_bytes))
            else:
                _write_if_exists(self.path / "memory.swap.max", "0")
        except OSError as exc:
            self.remove()
            raise SystemExit(
                f"memory_limit: cannot create a memory cgroup at {self.path} ({exc.strerror}); "
                "run as root or in a delegated cgroup"
            ) from None
        self.limit_bytes = int(_read(self.path / limit_file).split()[0])

    def join(self) -> None:
        """Called in a child between fork and exec: the child and all it starts count."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def reset_peak(self) -> None:
        if self.version == 1:
            (self.path / "memory.max_usage_in_bytes").write_text("0")

    def peak_bytes(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        text = _read(self.path / name)
        return int(text) if text else None

    def oom_kills(self) -> int:
        """How many processes the OOM killer took in this group (0 where not reported)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in _read(self.path / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write_if_exists(path: Path, value: str) -> None:
    if path.exists():
        path.write_text(value)


def stage_child(stage: str, config_file: Path, run_id: str, inputs: dict, result: Path) -> None:
    """Inside the cgroup: run one stage function and write its URI and peak RSS."""
    from trainpipe.stages.entry import peak_rss_mib

    started = time.monotonic()
    uri = ""
    if stage == "imports":
        import trainpipe.stages.finetune
        import trainpipe.stages.pretrain
        import trainpipe.stages.validate  # noqa: F401
    else:
        from trainpipe.stages.entry import stage_entry
        from trainpipe.stages.finetune import run_finetune
        from trainpipe.stages.pretrain import run_pretrain
        from trainpipe.stages.validate import run_validate

        config_json = config_file.read_text()
        if stage == "validate":
            uri = stage_entry(run_validate)(config_json, run_id)[1]
        elif stage == "pretrain":
            uri = stage_entry(run_pretrain)(config_json, run_id, **inputs)
        else:
            uri = stage_entry(run_finetune)(config_json, run_id, **inputs)
    result.write_text(
        json.dumps(
            {
                "uri": uri,
                "stage_s": round(time.monotonic() - started, 1),
                # Not ru_maxrss: it carries this benchmark's own size over through fork and exec.
                "self_kib": round(peak_rss_mib() * 1024),
                # Workers forked by the stage (none at loader_workers=0): their ru_maxrss starts
                # at the stage's size at the fork, which is below the stage's own peak.
                "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            }
        )
    )


def limited_stage(
    cgroup: MemoryCgroup, stage: str, root: Path, config_file: Path, inputs: dict
) -> dict:
    """Run ``stage`` in a fresh process inside ``cgroup``; what it reported and what the
    cgroup saw."""
    report = root / f"{stage}.json"
    report.unlink(missing_ok=True)
    cgroup.reset_peak()
    kills_before = cgroup.oom_kills()
    command = [sys.executable, "-m", "benchmarks.memory_limit", "--child", stage]
    command += [str(config_file), "bench", json.dumps(inputs), str(report)]
    started = time.monotonic()
    with (root / f"{stage}.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=cgroup.join)
    out: dict = {"rc": done.returncode, "wall_s": round(time.monotonic() - started, 1)}
    peak = cgroup.peak_bytes()
    out["cgroup_peak_mib"] = None if peak is None else round(peak / 2**20, 1)
    out["oom_killed"] = cgroup.oom_kills() > kills_before or done.returncode == -9
    if report.exists():
        child = json.loads(report.read_text())
        out["uri"] = child["uri"]
        out["peak_rss_mib"] = round(child["self_kib"] / 1024, 1)
        out["largest_child_peak_rss_mib"] = round(child["children_kib"] / 1024, 1)
    else:
        out["log_tail"] = (root / f"{stage}.log").read_text()[-1500:]
    return out


def limit_run(root: Path, table_mib: float, limit_mib: float, rows_per_shard: int, extra: dict):
    """Write the table under ``root``, then the baseline and every stage under the limit."""
    cgroup = MemoryCgroup(int(limit_mib * 2**20), f"trainpipe-bench-{os.getpid()}")
    try:
        rows = -int(-table_mib * 2**20 // ROW_BYTES)  # at least table_mib
        started = time.monotonic()
        disk = write_table(root / "table", rows, rows_per_shard)
        result: dict = {
            "rows": rows,
            "table_mib_in_memory": round(rows * ROW_BYTES / 2**20, 1),
            "table_mib_on_disk": round(disk / 2**20, 1),
            "limit_mib": round(cgroup.limit_bytes / 2**20, 1),
            "cgroup": f"v{cgroup.version}",
            "write_s": round(time.monotonic() - started, 1),
        }
        result["table_to_limit"] = round(rows * ROW_BYTES / cgroup.limit_bytes, 2)
        config_file = root / "config.json"
        config_file.write_text(config_json(root, extra))
        baseline = limited_stage(cgroup, "imports", root, config_file, {})
        result["import_baseline"] = baseline
        stages: dict = {}
        inputs: dict = {}
        for stage in STAGES:
            stages[stage] = limited_stage(cgroup, stage, root, config_file, inputs)
            if stages[stage]["rc"]:
                break
            if stage == "validate":
                inputs = {"data_uri": stages[stage]["uri"]}
            elif stage == "pretrain":
                inputs = {**inputs, "pretrain_uri": stages[stage]["uri"]}
        result["stages"] = stages
        result.update(throughput(root, stages, rows))
        result["passed"] = (
            all(s["rc"] == 0 and not s["oom_killed"] for s in stages.values())
            # RSS counts shared library pages another group may already hold: the stricter.
            and all(s["peak_rss_mib"] < result["limit_mib"] for s in stages.values())
            and len(stages) == len(STAGES)
            and result.get("finetune_epochs") == 1
            and result["table_to_limit"] >= GOAL_FACTOR
        )
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        cgroup.remove()


def config_json(root: Path, extra: dict) -> str:
    from trainpipe.config import load_config

    sets = {"storage.uri": str(root / "runs"), **settings(root / "table", 1024, extra)}
    return load_config(overrides=[f"{k}={v}" for k, v in sets.items()]).model_dump_json()


def throughput(root: Path, stages: dict, rows: int) -> dict:
    """Rows/s per stage: validation reads every row, the training stages their training split
    (plus a pass over validation, which is in their wall time)."""
    out: dict = {}
    run_dir = root / "runs" / "runs" / "bench"
    dataset = run_dir / "validate_data" / "dataset.json"
    if not dataset.exists():
        return out
    sizes = json.loads(dataset.read_text())["split_sizes"]
    out["split_rows"] = sizes
    for stage, done in stages.items():
        if done["rc"] == 0:
            counted = rows if stage == "validate" else sizes["train"]
            done["rows_per_s"] = round(counted / done["wall_s"])
    history = run_dir / "finetune" / "history.json"
    if history.exists():
        out["finetune_epochs"] = len(json.loads(history.read_text())["history"])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        stage, config_file, run_id, inputs, result = sys.argv[2:7]
        stage_child(stage, Path(config_file), run_id, json.loads(inputs), Path(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-gib", type=float, default=5.0, help="in memory (default 5)")
    parser.add_argument("--limit-gib", type=float, default=1.0, help="the cgroup's (default 1)")
    parser.add_argument("--rows-per-shard", type=int, default=500_000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="a 200 MiB table")
    parser.add_argument("--dir", help="write the table and runs here (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep --dir afterwards")
    args = parser.parse_args()
    table_mib = 200.0 if args.quick else args.table_gib * 1024
    rows_per_shard = 100_000 if args.quick else args.rows_per_shard
    extra = dict(item.split("=", 1) for item in args.set)
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-limit-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = limit_run(root, table_mib, args.limit_gib * 1024, rows_per_shard, extra)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
