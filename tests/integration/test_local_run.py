"""``trainpipe run`` executes the real DAG through kfp.local, end to end.

Every stage runs as a real subprocess; the deploy stage starts the real ONNX Runtime server on a
loopback port and sends it a real inference request. The S3 run talks HTTP to moto's server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainpipe.artifacts import ArtifactSet
from trainpipe.registry import Registry
from trainpipe.storage import open_store

pytestmark = pytest.mark.slow

# Short training on all labels: enough to pass the default gate in a fraction of the time.
FAST = [
    *("--set", "pretrain.epochs=3", "--set", "finetune.epochs=10"),
    *("--set", "finetune.label_fraction=1.0", "--set", "finetune.compare_with_scratch=false"),
    *("--set", "finetune.min_steps=0", "--set", "finetune.ensemble_size=1"),
]


def trainpipe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainpipe", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def run_id_of(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("run "))
    return line.split()[1]


def write_table(path: Path, n: int = 400, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    label = rng.choice(["low", "mid", "high"], size=n)
    center = np.select([label == "low", label == "mid"], [-2.0, 0.0], 2.0)
    columns = {f"x{i}": rng.normal(size=n) + center * (i % 2) for i in range(6)}
    pq.write_table(pa.table({**columns, "grade": label}), path)


def test_default_run_on_digits(tmp_path):
    """The demo exactly as a new user runs it (defaults), plus the summary they see."""
    done = trainpipe("run", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for stage in ("validate_data", "pretrain", "finetune", "evaluate", "export_onnx", "gate"):
        assert f"\n{stage}" in out and "done" in out
    assert "gate: PROMOTE" in out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.85
    assert " ships; with 235 labels, pretrained " in out  # chosen on validation
    assert "baselines on the same split (accuracy): network " in out
    assert "deploy: smoke inference of 8 examples matched" in out
    assert "Warning" not in out + done.stderr and "INFO" not in out + done.stderr

    run_id = run_id_of(out)
    store = open_store(str(tmp_path))
    summary = store.get_json(f"runs/{run_id}/summary.json")
    assert {s["stage"]: s["status"] for s in summary["stages"]} == dict.fromkeys(
        [
            "validate_data",
            "pretrain",
            "finetune",
            "evaluate",
            "export_onnx",
            "gate",
            "register",
            "deploy",
        ],
        "done",
    )
    assert summary["wall_s"] < 180
    registry = Registry(store, "digits-classifier")
    champion = registry.champion()
    assert champion.version == "1"
    package = ArtifactSet.open(champion.uri)
    assert package.get_json("model.json")["inputs"][0]["shape"] == [-1, 1, 8, 8]
    evaluation = ArtifactSet.open(store.uri_for(f"runs/{run_id}/evaluate"))
    assert evaluation.get_json("metrics.json")["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    payoff = ArtifactSet.open(store.uri_for(f"runs/{run_id}/finetune"))
    payoff = payoff.get_json("pretraining_payoff.json")
    assert payoff["pretrained_test_score"] > payoff["scratch_test_score"]
    assert payoff["decided_on"] == "validation"
    assert payoff["initialization"] == (
        "pretrained" if payoff["pretrained_val_score"] >= payoff["scratch_val_score"] else "scratch"
    )
    assert '<img alt="confusion matrix"' in evaluation.get_bytes("report.html").decode()


def test_table_run_on_s3(tmp_path, s3_bucket, s3_endpoint):
    """A user's Parquet table from S3, artifacts in S3: the same DAG, nothing local.

    The endpoint is only in config (the suite does not export AWS_ENDPOINT_URL), so every
    stage, the champion loading and the registry must carry it."""
    table = tmp_path / "grades.parquet"
    write_table(table)
    open_store(s3_bucket, endpoint_url=s3_endpoint).put_bytes(
        "data/grades.parquet", table.read_bytes()
    )
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path / "local"),
        "--set",
        f"storage.uri={s3_bucket}/pipe",
        "--set",
        f"storage.endpoint_url={s3_endpoint}",
        "--set",
        f"data.source={s3_bucket}/data/grades.parquet",
        "--set",
        "data.label_column=grade",
        "--set",
        "registry.model_name=grades",
        "--set",
        "gate.min_value=0.6",
        # FAST trains far less than the defaults; this test is about S3, not model quality.
        "--set",
        "gate.max_gap_to_linear=null",
        *FAST,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gate: PROMOTE" in done.stdout
    store = open_store(f"{s3_bucket}/pipe", endpoint_url=s3_endpoint)
    champion = Registry(store, "grades").champion()
    assert champion is not None and champion.uri.startswith("s3://")
    metadata = ArtifactSet.open(champion.uri, endpoint_url=s3_endpoint).get_json("model.json")
    assert metadata["labels"] == ["high", "low", "mid"]
    assert metadata["inputs"][0]["shape"] == [-1, 6]
    run_id = run_id_of(done.stdout)
    assert store.exists(f"runs/{run_id}/deploy/deploy.json")


def write_regression_table(path: Path, n: int = 500, seed: int = 0) -> None:
    """A price-like target of numbers (some missing) and a string category."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 200, n)
    city = rng.choice(["oslo", "bergen", "tromso"], n)
    rooms = rng.integers(1, 6, n)
    price = 3.0 * size + np.select([city == "oslo", city == "bergen"], [200.0, 80.0], 0.0)
    price += 15.0 * rooms + rng.normal(0, 20, n)
    sizes = [None if rng.random() < 0.1 else float(v) for v in size]
    pq.write_table(pa.table({"size": sizes, "city": city, "rooms": rooms, "price": price}), path)


def test_regression_run_end_to_end(tmp_path):
    """A float label makes it a regression run: R^2/RMSE/MAE, baselines, a report with
    predicted vs actual, named raw inputs served (the deploy check sends strings and NaN
    through the real server), a prediction output."""
    table = tmp_path / "prices.parquet"
    write_regression_table(table)
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path),
        *("--set", f"data.source={table}", "--set", "data.label_column=price"),
        *("--set", "registry.model_name=prices", "--set", "gate.min_r2=0.5"),
        *("--set", "gate.max_gap_to_linear=0.05"),
        *FAST,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test R^2 " in done.stdout and "baselines on the same split (r2)" in done.stdout
    assert "gate: PROMOTE" in done.stdout, done.stdout[-2000:]
    store = open_store(str(tmp_path))
    run_id = run_id_of(done.stdout)
    evaluation = ArtifactSet.open(store.uri_for(f"runs/{run_id}/evaluate"))
    metrics = evaluation.get_json("metrics.json")
    assert metrics["task"] == "regression" and metrics["r2"] > 0.5
    assert {"r2", "rmse", "mae"} <= set(metrics["baselines"]["linear"])
    assert '<img alt="predicted vs actual"' in evaluation.get_bytes("report.html").decode()
    package = ArtifactSet.open(Registry(store, "prices").champion().uri)
    meta = package.get_json("model.json")
    assert [i["name"] for i in meta["inputs"]] == ["size", "city", "rooms"]
    assert meta["inputs"][1]["datatype"] == "BYTES"
    assert [o["name"] for o in meta["outputs"]] == ["logits", "prediction"]
    deployed = store.get_json(f"runs/{run_id}/deploy/deploy.json")
    assert deployed["score"] == "r2"
    assert deployed["served_accuracy"] == pytest.approx(metrics["r2"], abs=1e-3)


def test_gate_rejection_skips_register_and_deploy(tmp_path):
    done = trainpipe("run", "--output", str(tmp_path), "--set", "gate.min_value=0.9999", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gate: REJECT" in done.stdout
    assert "skipped (gate)" in done.stdout
    assert Registry(open_store(str(tmp_path)), "digits-classifier").champion() is None


def test_corrupt_data_fails_before_running_with_one_clear_line(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    done = trainpipe("run", "--output", str(tmp_path / "out"), "--set", f"data.source={bad}")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("trainpipe: data error: ") and "broken.parquet is unreadable" in line
    assert not (tmp_path / "out" / "runs").exists()


def test_column_problems_fail_before_running_and_name_the_file(tmp_path):
    table = tmp_path / "grades.parquet"
    write_table(table)
    done = trainpipe("run", "--output", str(tmp_path / "out"), "--set", f"data.source={table}")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"trainpipe: data error: {table} has no label column 'label'")
    assert not (tmp_path / "out" / "runs").exists()


def test_wrong_config_value_fails_before_running(tmp_path):
    done = trainpipe("run", "--output", str(tmp_path), "--set", "finetune.optimizer=adamax")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "trainpipe: config error: finetune.optimizer='adamax': Input should be 'sgd', "
        "'sgd_momentum', 'sgd_nesterov', 'adagrad', 'rmsprop', 'adam' or 'adamw'"
    )
    assert not (tmp_path / "runs").exists()


def test_missing_data_path_fails_before_running(tmp_path):
    done = trainpipe("run", "--output", str(tmp_path), "--set", "data.source=/no/such/data.csv")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "trainpipe: data error: /no/such/data.csv does not exist; fix data.source (a file, a "
        "folder with train/validation/test files, or 'digits')"
    ]
    assert not (tmp_path / "runs").exists()


def test_registry_cli_lists_and_rolls_back(tmp_path):
    for _ in range(2):
        assert trainpipe("run", "--output", str(tmp_path), *FAST).returncode == 0
    # The same --output as `run`; with no --model, every model in the store is listed.
    listing = trainpipe("registry", "list", "--output", str(tmp_path))
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()  # model, header, versions 1 and 2 (champion), legend
    assert lines[0].startswith("digits-classifier  (file://")
    assert lines[2].startswith("  ") and lines[3].startswith("*")
    assert lines[4].startswith("* marks the champion")
    rollback = trainpipe("registry", "rollback", "--output", str(tmp_path))
    assert "version 2 -> version 1 (rolled back)" in rollback.stdout
    shown = trainpipe("registry", "show", "--json", "--set", f"storage.uri={tmp_path}")
    shown = json.loads(shown.stdout)
    assert (shown["version"], shown["champion"]) == ("1", True)
    assert shown["gate"]["decision"] == "promote"


def test_console_is_quiet_and_details_go_to_the_run_log(tmp_path):
    """Progress, stage lines and the summary only: no library warnings or INFO lines, no
    per-epoch metrics; those go to runs/<id>/run.log, whose path the summary prints. kfp.local's
    working files go beside the configured store, not into the current directory."""
    work, store_dir = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "trainpipe", "run", "--set", f"storage.uri={store_dir}", *FAST],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    for noise in (
        "Warning",
        "warnings.warn",
        " INFO ",
        "INFO -",
        "Using categorical units",
        "y_prob",
        "executor_output",
        "epoch ",
        "Replaced initializer",
    ):
        assert noise not in console, (noise, console)
    assert "[validate_data] running" in console and "[finetune] learning curves:" in console
    assert "gate: PROMOTE" in done.stdout
    run_id = run_id_of(done.stdout)
    log_line = next(x for x in done.stdout.splitlines() if x.startswith("full log"))
    assert log_line.endswith(f"{store_dir}/runs/{run_id}/run.log")
    log = (store_dir / "runs" / run_id / "run.log").read_text()
    assert "[finetune] epoch  10/10" in log and "Executing task" in log
    for cause_fixed in ("Using categorical units", "y_prob", "ConvergenceWarning", "Replaced init"):
        assert cause_fixed not in log
    assert not (work / "trainpipe-runs").exists() and list(work.iterdir()) == []
    assert (store_dir / "kfp-local").is_dir()
